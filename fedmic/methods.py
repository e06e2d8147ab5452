"""What a method declaration is, the registry that finds them, and everything derived from them.

Each method is one file, fedmic/algorithms/<name>.py: its declaration (`METHOD = Method(...)`:
hyperparameters with their type, default, range, meaning and tuning space, pretty name,
flags, cross-field rules) beside the `Algorithm` subclass that implements it. The registry
(`METHODS`) lists the files of that package and reads each declaration without running the
rest of its file, so checking configs needs neither torch nor a method's code.

Everything else about hyperparameters is derived from the declarations:
- the defaults an algorithm runs with and the checks on every value (`resolve_hp`), which
  `RunConfig.validate` applies to every run, so the workflow refuses a bad value while it
  builds the DAG, before any job runs or any output is deleted;
- the method part of workflow/schemas/config.schema.yaml and the table in
  docs/hyperparameters.md, both written by `python -m fedmic.methods` (tests check that the
  committed files are current).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import math
import pkgutil
import sys
from dataclasses import dataclass, fields, make_dataclass
from pathlib import Path
from typing import Any, Callable

_KINDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Space:
    """Where tuning draws a hyperparameter from (docs/tuning.md): `choices`, or the range
    [low, high], on a log scale when `log` (rates and weights spanning decades); integers for an
    integer hyperparameter."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def draw(self, rng, kind: type):
        if self.choices:
            return self.choices[int(rng.integers(len(self.choices)))]
        if kind is int:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        u = float(rng.random())
        x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))) if self.log \
            else self.low + u * (self.high - self.low)
        return float(f"{x:.3g}")  # 3 significant digits: values a reader can type back

    def text(self) -> str:
        if self.choices:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        return f"{'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"


def log_range(low, high) -> Space:
    return Space(low, high, log=True)


def uniform(low, high) -> Space:
    return Space(low, high)


def one_of(*choices) -> Space:
    return Space(choices=tuple(choices))


# Every method's learning rate is tuned over the same space (a train setting, not a method's).
LR_SPACE = log_range(0.005, 0.2)


@dataclass(frozen=True)
class HP:
    """One hyperparameter. Bounds: `gt`/`ge` below, `lt`/`le` above; `choices` for strings;
    `nullable`: null is allowed (its meaning is said in `meaning`)."""

    name: str
    kind: type
    default: Any
    meaning: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple = ()
    nullable: bool = False
    space: Space | None = None  # what tuning searches (None: not tuned)

    def rule(self) -> str:
        """What a valid value is, in words ('a number in (0, 1]', "'delta' or 'params'")."""
        if self.choices:
            text = " or ".join(repr(c) for c in self.choices)
        else:
            text = _KINDS[self.kind]
            lo = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else None
            hi = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else None
            if lo and hi:
                text += f" in {lo}, {hi}"
            elif lo:
                text += f" {'>' if self.gt is not None else '>='} {lo[1:]}"
            elif hi:
                text += f" {'<' if self.lt is not None else '<='} {hi[:-1]}"
        return f"{text} or null" if self.nullable else text

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or self.kind is bool:
            return isinstance(value, bool) and self.kind is bool  # True is not a number, 1 not a switch
        if self.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # 10.0 is an integer, as JSON schema says
        if not isinstance(value, (int, float) if self.kind is float else self.kind):
            return False
        if self.choices:
            return value in self.choices
        if self.kind is str:
            return True
        return math.isfinite(value) and not any(
            bound is not None and bad(bound) for bound, bad in (
                (self.gt, lambda b: value <= b), (self.ge, lambda b: value < b),
                (self.lt, lambda b: value >= b), (self.le, lambda b: value > b)))


@dataclass(frozen=True)
class Rule:
    """A check across hyperparameters (and the run's other settings, e.g. its model).
    `ok(hp, run)` gets the full hyperparameters and the run config as a dict;
    `message` is formatted with both (``{hp[energy_start]}``, ``{run[model]}``)."""

    text: str                     # the rule, for the docs table
    ok: Callable[[dict, dict], bool]
    message: str
    uses_run: bool = False        # needs the run's settings (skipped when only hp is known)


@dataclass(frozen=True)
class Method:
    """A method's declaration, written as `METHOD = Method(...)` in its file under
    fedmic/algorithms/ beside the class that implements it (the `Algorithm` subclass named by
    `cls`). The registry reads it without running the rest of that file (`read_declaration`)."""

    name: str                     # the `method:` value in configs
    pretty: str                   # in tables and figures
    cls: str                      # the class in the same file that implements it
    personalised: bool | None = None  # each client is scored with its own model (None: as `extends`)
    factorised: bool | None = None    # uploads are SVD factors, plotted in svd_ranks (None: as `extends`)
    hps: tuple[HP, ...] = ()
    rules: tuple[Rule, ...] = ()
    extends: str | None = None    # the neighbour whose class this one subclasses: its hps and rules come first
    module: str = ""              # the file's name under fedmic/algorithms/ (set by the registry)

    @property
    def hp(self) -> dict[str, HP]:
        return {h.name: h for h in self.hps}

    @functools.cached_property
    def hp_type(self) -> type["HyperParameters"]:
        """The frozen dataclass `resolve_hp` returns for this method: one typed field per
        hyperparameter, in declaration order (a nullable one also takes None)."""
        return make_dataclass(
            f"{self.cls}HyperParameters",
            [(h.name, h.kind | None if h.nullable else h.kind) for h in self.hps],
            bases=(HyperParameters,), frozen=True)


class HyperParameters:
    """Base of every method's typed, frozen hyperparameters (`Method.hp_type`): an algorithm
    reads `self.hp.tau`; an assignment raises dataclasses.FrozenInstanceError."""

    def to_dict(self) -> dict:
        """{name: value} in declaration order: what run JSONs and fingerprints store."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def number(name, default, meaning, space=None, **bounds) -> HP:
    return HP(name, float, default, meaning, space=space, **bounds)


def integer(name, default, meaning, space=None, **bounds) -> HP:
    return HP(name, int, default, meaning, space=space, **bounds)


def flag(name, default, meaning) -> HP:
    return HP(name, bool, default, meaning)


def choice(name, default, choices, meaning) -> HP:
    return HP(name, str, default, meaning, choices=tuple(choices))


def energy_schedule(start_meaning: str) -> tuple[HP, HP]:
    """FedKD's energy threshold, linear over the rounds (FedMIC uses it too); add
    ENERGY_RULE to the method's rules."""
    return (number("energy_start", 0.95, start_meaning, gt=0, le=1),
            number("energy_end", 0.98, "energy threshold of the last round", gt=0, le=1))


ENERGY_RULE = Rule("energy_start <= energy_end", lambda hp, run: hp["energy_start"] <= hp["energy_end"],
                   "energy_start ({hp[energy_start]}) > energy_end ({hp[energy_end]}); the threshold grows "
                   "over the rounds, so set energy_start <= energy_end")


def adaptive_weight() -> tuple[HP, HP]:
    return (flag("adaptive", True, "divide the distillation terms by CE_teacher + CE_student (FedKD's rule)"),
            number("max_adaptive_weight", 10.0, "cap of the adaptive weight 1 / (CE_T + CE_S)", gt=0))


# --------------------------------------------------------------------------- the registry
ALGORITHMS_DIR = Path(__file__).resolve().parent / "algorithms"
DECLARATION = "METHOD"


def _declaration_namespace() -> dict:
    # what a declaration may use: this module's public names (HP helpers, Space, Rule, ...)
    return {k: v for k, v in globals().items() if not k.startswith("_")}


def read_declaration(path: Path) -> Method | None:
    """The `METHOD = Method(...)` assignment at the top level of `path`, evaluated alone with
    this module's names, so that checking configs never imports torch or a method's code
    (the workflow checks every run while it builds the DAG). None: the file declares no
    method (a shared base such as base.py or mutual.py)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = [n for n in tree.body if isinstance(n, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == DECLARATION for t in n.targets)]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"{path}: {DECLARATION} is assigned {len(found)} times; a method file declares one method")
    try:
        method = eval(compile(ast.Expression(found[0].value), str(path), "eval"), _declaration_namespace())
    except NameError as e:
        raise ValueError(f"{path}: {DECLARATION} uses a name the registry cannot see ({e}); a declaration may "
                         f"use only fedmic.methods' names (number, integer, flag, choice, Rule, Space, ...): "
                         f"write the value inline, or add the helper to fedmic/methods.py") from None
    if not isinstance(method, Method):
        raise ValueError(f"{path}: {DECLARATION} must be a fedmic.methods.Method, got {type(method).__name__}")
    for h in method.hps:
        # the typed hyperparameters hold exactly the declared kind (1 is not a float default)
        if not h.accepts(h.default) or (h.default is not None and type(h.default) is not h.kind):
            raise ValueError(f"{path}: hyperparameter {h.name!r}: default {h.default!r} is not {h.rule()}; "
                             f"fix the default")
    return dataclasses.replace(method, module=path.stem)


def _with_neighbour(method: Method, declared: dict[str, Method]) -> Method:
    """`method` with its `extends` neighbour's hyperparameters and rules first and its flags as defaults."""
    if method.extends is None:
        return dataclasses.replace(method, personalised=bool(method.personalised), factorised=bool(method.factorised))
    if method.extends not in declared:
        raise ValueError(f"fedmic/algorithms/{method.module}.py: {method.name} extends unknown method "
                         f"{method.extends!r}; declared: {', '.join(sorted(declared))}")
    base = _with_neighbour(declared[method.extends], declared)
    clash = sorted(set(base.hp) & {h.name for h in method.hps})
    if clash:
        raise ValueError(f"fedmic/algorithms/{method.module}.py: {method.name} redeclares {clash}, which it "
                         f"inherits from {base.name}; declare only what it adds")
    return dataclasses.replace(
        method, hps=base.hps + method.hps, rules=base.rules + method.rules,
        personalised=base.personalised if method.personalised is None else method.personalised,
        factorised=base.factorised if method.factorised is None else method.factorised)


def discover(directory: Path = ALGORITHMS_DIR) -> dict[str, Method]:
    """Every method declared in a file of `directory` (the package fedmic.algorithms), by name,
    in the order of the file names."""
    declared: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules([str(directory)]), key=lambda i: i.name):
        if info.ispkg:
            continue
        path = directory / f"{info.name}.py"
        method = read_declaration(path)
        if method is None:
            continue
        if method.name in declared:
            raise ValueError(f"{path}: method {method.name!r} is declared in "
                             f"fedmic/algorithms/{declared[method.name].module}.py too; rename one")
        declared[method.name] = method
    return {name: _with_neighbour(m, declared) for name, m in declared.items()}


METHODS: dict[str, Method] = discover()


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def tuned_space(method: str) -> dict[str, tuple[type, Space]]:
    """What tuning searches for `method`: {name: (kind, space)}, the learning rate first."""
    return {"lr": (float, LR_SPACE), **{h.name: (h.kind, h.space) for h in get_method(method).hps if h.space}}


def hp_defaults(method: str) -> dict:
    return {h.name: h.default for h in get_method(method).hps}


def number_hint(value) -> str:
    """For a number that YAML read as a string (it reads 1e-3 so; 1.0e-3 is a float)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    return " (YAML reads 1e-3 as a string: write 1.0e-3)" if isinstance(value, str) else ""


def resolve_hp(method: str, given: dict, run: dict | None = None) -> HyperParameters:
    """The method's full hyperparameters as its typed, frozen `hp_type`: `given` checked one by
    one against the declaration, the defaults filling the rest, then the cross-field rules
    (with the run's settings, `run`, where a rule needs them). Numbers come back as their
    declared type, so `tau: 4` and `tau: 4.0` are the same run. Raises ValueError naming the
    key and the rule."""
    m = get_method(method)
    specs = m.hp
    if not isinstance(given, dict):
        raise ValueError(f"{method}: hp must be a mapping of hyperparameter: value, got {given!r}")
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for method {method!r}; "
                         f"valid: {', '.join(specs) or 'none (this method has no hyperparameters)'}")
    full = hp_defaults(method)
    for key, value in given.items():
        h = specs[key]
        if not h.accepts(value):
            raise ValueError(f"{method}: hyperparameter {key!r} must be {h.rule()}, got {value!r}{number_hint(value) if h.kind is float else ''} "
                             f"[{key}: {h.meaning}]")
        full[key] = value if value is None or h.kind not in (int, float) else h.kind(value)
    for rule in m.rules:
        if (run is not None or not rule.uses_run) and not rule.ok(full, run or {}):
            raise ValueError(f"{method}: {rule.message.format(hp=full, run=run or {})}")
    return m.hp_type(**full)


# --------------------------------------------------------------------------- generated files
from . import generated  # noqa: E402
from .schema import SCHEMA_FILE  # noqa: E402  (the generated files sit in the checkout)

REPO = SCHEMA_FILE.parents[2]
DOCS_FILE = REPO / "docs" / "hyperparameters.md"
BEGIN = "BEGIN generated by `python -m fedmic.methods` from the METHOD declarations in fedmic/algorithms/; do not edit by hand"


def hp_schema(h: HP) -> dict:
    """JSON schema of one hyperparameter (ranges and choices; RunConfig also refuses NaN)."""
    if h.choices:
        s: dict = {"enum": [*h.choices, None] if h.nullable else list(h.choices)}
    else:
        kind = {float: "number", int: "integer", bool: "boolean", str: "string"}[h.kind]
        s = {"type": [kind, "null"] if h.nullable else kind}
        for key, bound in (("exclusiveMinimum", h.gt), ("minimum", h.ge), ("exclusiveMaximum", h.lt), ("maximum", h.le)):
            if bound is not None:
                s[key] = bound
    s["default"] = h.default
    s["description"] = f"{h.meaning}; {h.rule()}"
    return s


def schema_definitions() -> dict:
    """The schema's `arm` (method + hp + train overrides) and one `hp_<method>` per method."""
    defs: dict = {"arm": {
        "type": "object",
        "additionalProperties": False,
        "description": "a method variant: the method (default: the arm's name; in tables.t5.arms: fedmic), "
                       "its hyperparameters and training overrides",
        "properties": {
            "method": {"type": "string", "enum": list(METHODS)},
            "hp": {"type": "object", "description": "the method's hyperparameters (its defaults fill the rest)"},
            "train": {"$ref": "#/definitions/arm_train"},
        },
        "allOf": [{"if": {"required": ["method"], "properties": {"method": {"const": name}}},
                   "then": {"properties": {"hp": {"$ref": f"#/definitions/hp_{name}"}}}} for name in METHODS],
    }}
    for m in METHODS.values():
        defs[f"hp_{m.name}"] = {"type": "object", "additionalProperties": False,
                                "description": f"{m.pretty}'s hyperparameters",
                                "properties": {h.name: hp_schema(h) for h in m.hps}}
    return defs


def _fmt_default(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else f"{v!r}" if isinstance(v, str) else f"{v:g}"


def docs_table() -> str:
    rows = ["| method | hyperparameter | default | valid values | tuned over | meaning |", "|---|---|---|---|---|---|"]
    for m in METHODS.values():
        rows.append(f"| {m.pretty} (`{m.name}`) | `lr` (train) | the run's `lr` | a number > 0 | {LR_SPACE.text()} "
                    f"| learning rate of local SGD, tuned for every method |")
        for h in m.hps:
            meaning = h.meaning.replace("|", "\\|")  # a pipe would end the cell
            tuned = h.space.text() if h.space else "not tuned"
            rows.append(f"| {m.pretty} (`{m.name}`) | `{h.name}` | `{_fmt_default(h.default)}` | {h.rule()} | {tuned} "
                        f"| {meaning} |")
        for r in m.rules:
            rows.append(f"| {m.pretty} (`{m.name}`) | (rule) | | {r.text} | | checked for every run before it starts |")
    return "\n".join(rows)


def _schema_block() -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def mapping(dumper, data):  # leaves and each method's if/then on one line
        flow = "if" in data or not any(isinstance(v, (dict, list)) for v in data.values())
        return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)

    Dumper.add_representer(dict, mapping)
    text = yaml.dump(schema_definitions(), Dumper=Dumper, sort_keys=False, default_flow_style=None, width=120,
                     allow_unicode=True)
    return "".join(f"  {line}\n" for line in text.splitlines())


def generated_files() -> dict[Path, tuple[str, str]]:
    """{file: (comment prefix, block text)} for every file with a generated block."""
    return {SCHEMA_FILE: ("  # ", _schema_block()), DOCS_FILE: ("<!-- ", docs_table() + "\n")}


def render(path: Path, prefix: str, block: str) -> str:
    """The file's text with its generated block replaced by `block`."""
    return generated.replace_block(path, prefix, BEGIN, block)


def main(argv=None) -> int:
    generated.write({path: render(path, prefix, block) for path, (prefix, block) in generated_files().items()}, REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
