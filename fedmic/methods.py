"""Every method's declaration: its hyperparameters (name, type, default, range, meaning) and the
facts the grid and the reports need (class, pretty name, personalised or not), readable
without torch or the method's own code.

Everything else about hyperparameters is derived from this one table:
- the defaults an algorithm runs with and the checks on every value (`resolve_hp`), which
  `RunConfig.validate` applies to every run, so the workflow refuses a bad value while it
  builds the DAG, before any job runs or any output is deleted;
- the method part of workflow/schemas/config.schema.yaml and the table in
  docs/hyperparameters.md, both written by `python -m fedmic.methods` (tests check that the
  committed files are current).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
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
    name: str                     # the `method:` value in configs
    pretty: str                   # in tables and figures
    impl: str                     # "module:Class" in fedmic/algorithms/
    personalised: bool = False    # each client is scored with its own model
    factorised: bool = False      # uploads are SVD factors (their ranks are plotted in svd_ranks)
    hps: tuple[HP, ...] = ()
    rules: tuple[Rule, ...] = ()

    @property
    def hp(self) -> dict[str, HP]:
        return {h.name: h for h in self.hps}


def number(name, default, meaning, space=None, **bounds) -> HP:
    return HP(name, float, default, meaning, space=space, **bounds)


def integer(name, default, meaning, space=None, **bounds) -> HP:
    return HP(name, int, default, meaning, space=space, **bounds)


def flag(name, default, meaning) -> HP:
    return HP(name, bool, default, meaning)


def choice(name, default, choices, meaning) -> HP:
    return HP(name, str, default, meaning, choices=tuple(choices))


def energy_schedule(start_meaning: str) -> tuple[HP, HP, Rule]:
    """FedKD's energy threshold, linear over the rounds (FedMIC uses it too)."""
    return (number("energy_start", 0.95, start_meaning, gt=0, le=1),
            number("energy_end", 0.98, "energy threshold of the last round", gt=0, le=1),
            Rule("energy_start <= energy_end", lambda hp, run: hp["energy_start"] <= hp["energy_end"],
                 "energy_start ({hp[energy_start]}) > energy_end ({hp[energy_end]}); the threshold grows "
                 "over the rounds, so set energy_start <= energy_end"))


def adaptive_weight() -> tuple[HP, HP]:
    return (flag("adaptive", True, "divide the distillation terms by CE_teacher + CE_student (FedKD's rule)"),
            number("max_adaptive_weight", 10.0, "cap of the adaptive weight 1 / (CE_T + CE_S)", gt=0))


_E_START, _E_END, _E_RULE = energy_schedule("SVD energy threshold of round 1 (FedKD's T_start)")

_METHODS = (
    Method("local", "Local", "local:Local", personalised=True),
    Method("fedavg", "FedAvg", "fedavg:FedAvg"),
    Method("fedprox", "FedProx", "fedprox:FedProx", hps=(
        number("mu", 0.01, "proximal weight: loss + mu/2 ||w - w_global||^2 (the paper tunes it over "
                           "0.001-1; 0 is FedAvg)", space=log_range(0.001, 1.0), ge=0),
    )),
    Method("fedbn", "FedBN", "fedbn:FedBN", personalised=True, rules=(
        Rule("needs a model with batch norm", lambda hp, run: run.get("model") in ("cnn_bn", "resnet18"),
             "batch-norm layers stay local, but model {run[model]!r} has none; "
             "use model cnn_bn or resnet18 (the arm's train: {{model: cnn_bn}})", uses_run=True),
    )),
    Method("fedper", "FedPer", "fedper:FedPer", personalised=True),
    Method("fedrep", "FedRep", "fedrep:FedRep", personalised=True, hps=(
        integer("head_epochs", 10, "epochs on the head (encoder frozen) before the encoder's "
                                   "local_epochs (the paper: 10 per representation epoch)",
                space=Space(1, 10), ge=1),
    )),
    Method("ditto", "Ditto", "ditto:Ditto", personalised=True, hps=(
        number("lam", 0.1, "pull of the personal model towards the global one: lam/2 ||v - w||^2",
               space=log_range(0.01, 2.0), ge=0),
        integer("personal_epochs", None, "local epochs of the personal model; null: the run's local_epochs",
                ge=1, nullable=True),
    )),
    Method("moon", "MOON", "moon:MOON", hps=(
        number("mu", 1.0, "weight of the model-contrastive loss (the paper: 5 on CIFAR-10, 1 on CIFAR-100)",
               space=log_range(0.1, 10.0), ge=0),
        number("tau", 0.5, "temperature of the contrastive loss", space=one_of(0.1, 0.5, 1.0), gt=0),
        integer("proj_dim", 256, "output size of the projection head the contrastive loss compares", ge=1),
    )),
    Method("fml", "FML", "fml:FML", personalised=True, hps=(
        number("alpha", 0.5, "weight of CE in the local model's loss (1 - alpha weights the KL; 1: no distillation)",
               space=uniform(0.1, 0.9), ge=0, le=1),
        number("beta", 0.5, "weight of CE in the meme model's loss (1 - beta weights the KL)",
               space=uniform(0.1, 0.9), ge=0, le=1),
        number("tau", 1.0, "temperature of the mutual KL (1: plain softmax, as in deep mutual learning)",
               space=one_of(1.0, 2.0, 4.0), gt=0),
    )),
    Method("fedkd", "FedKD", "fedkd:FedKD", personalised=True, factorised=True, hps=(
        number("alpha", 1.0, "weight of the output (KL) distillation", space=log_range(0.1, 10.0), ge=0),
        number("beta", 1.0, "weight of the hidden-state (MSE) distillation", space=log_range(0.1, 10.0), ge=0),
        number("tau", 1.0, "distillation temperature (the paper distils plain softmax outputs)",
               space=one_of(1.0, 2.0, 4.0), gt=0),
        *adaptive_weight(),
        _E_START, _E_END,
        number("mentor_width", 1.0, "width multiplier of the private mentor", gt=0),
        number("mentee_width", 0.5, "width multiplier of the shared mentee", gt=0),
        choice("downlink", "delta", ("delta", "params"),
               "what the server broadcasts: the factorised global update (the paper's) or the factorised global mentee"),
    ), rules=(_E_RULE,)),
    Method("fedproto", "FedProto", "fedproto:FedProto", personalised=True, hps=(
        number("lam", 1.0, "weight of the prototype loss lam * MSE(r, global prototype of y); 0 is Local",
               space=log_range(0.01, 10.0), ge=0),
        choice("inference", "own_prototypes", ("own_prototypes", "all_prototypes", "head"),
               "a client's prediction: the nearest global prototype among the classes the client holds "
               "(the authors' code), among every class with a prototype (the paper's text), or its model's head"),
        choice("proto_weighting", "counts", ("counts", "uniform"),
               "server average per class: weighted by image counts (the paper's) or uniform (the authors' code)"),
    )),
    Method("fedmic", "FedMIC", "fedmic:FedMIC", personalised=True, factorised=True, hps=(
        number("alpha", 1.0, "weight of decision-level distillation", space=log_range(0.1, 10.0), ge=0),
        number("beta", 1.0, "weight of representation-level distillation", space=log_range(0.1, 10.0), ge=0),
        number("tau", 2.0, "distillation temperature", space=one_of(1.0, 2.0, 4.0), gt=0),
        flag("rep_distill", True, "representation-level distillation (ablation switch)"),
        flag("dec_distill", True, "decision-level distillation (ablation switch)"),
        flag("aux_matrices", True, "learnable maps between the two representation spaces; "
                                   "false: identity maps (needs equal widths)"),
        choice("aux_on", "representation", ("representation", "decision", "both"),
               "where the two auxiliary matrices act: between the representations (MSE terms), between "
               "the logits (KL terms: the Figure 2 caption's reading), or a pair at each level"),
        choice("teacher_start", "own", ("own", "broadcast"),
               "a teacher's first weights: its own random initialisation, or the global student the "
               "client receives in its first round (needs equal widths)"),
        *adaptive_weight(),
        flag("gpd", True, "global parameter decomposition (SVD both ways); false: dense weights both ways"),
        _E_START, _E_END,
        integer("fixed_rank", None, "keep this rank in every factorised tensor instead of the energy rule "
                                    "(ablation); null: the energy rule", ge=1, nullable=True),
        choice("decompose", "delta", ("delta", "params"),
               "what is factorised, both ways: the student's update (delta) or its weights (params: lossy)"),
        number("teacher_width", 1.0, "width multiplier of the private teacher", gt=0),
        number("student_width", 1.0, "width multiplier of the shared student", gt=0),
    ), rules=(
        _E_RULE,
        Rule("aux_on needs aux_matrices", lambda hp, run: hp["aux_matrices"] or hp["aux_on"] == "representation",
             "aux_on {hp[aux_on]!r} places auxiliary matrices but aux_matrices is false; "
             "set aux_matrices: true, or leave aux_on at 'representation'"),
        Rule("identity representation maps need equal widths",
             lambda hp, run: hp["teacher_width"] == hp["student_width"] or (
                 hp["aux_matrices"] and hp["aux_on"] != "decision"),
             "teacher_width {hp[teacher_width]} and student_width {hp[student_width]} differ, so the "
             "representations need auxiliary matrices between them; set equal widths, or aux_matrices: true "
             "with aux_on 'representation' or 'both'"),
        Rule("teacher_start broadcast needs equal widths",
             lambda hp, run: hp["teacher_start"] == "own" or hp["teacher_width"] == hp["student_width"],
             "teacher_start 'broadcast' copies the student into the teacher, but teacher_width "
             "{hp[teacher_width]} != student_width {hp[student_width]}; set equal widths or teacher_start: own"),
    )),
)

METHODS: dict[str, Method] = {m.name: m for m in _METHODS}


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


def resolve_hp(method: str, given: dict, run: dict | None = None) -> dict:
    """The method's full hyperparameters: `given` checked one by one against the spec, the
    defaults filling the rest, then the cross-field rules (with the run's settings, `run`,
    where a rule needs them). Numbers come back as their declared type, so `tau: 4` and
    `tau: 4.0` are the same run. Raises ValueError naming the key and the rule."""
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
    return full


# --------------------------------------------------------------------------- generated files
from .schema import SCHEMA_FILE  # noqa: E402  (the generated files sit in the checkout)

REPO = SCHEMA_FILE.parents[2]
DOCS_FILE = REPO / "docs" / "hyperparameters.md"
BEGIN = "BEGIN generated by `python -m fedmic.methods` from fedmic/methods.py; do not edit by hand"
END = "END generated"


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
    close = " -->" if prefix.strip() == "<!--" else ""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(rf"(^{re.escape(prefix)}{re.escape(BEGIN)}{close}\n).*?(^{re.escape(prefix)}{END}{close}\n)",
                         re.S | re.M)
    if not pattern.search(text):
        raise ValueError(f"{path}: no generated block (lines '{prefix}{BEGIN}{close}' ... '{prefix}{END}{close}')")
    return pattern.sub(lambda mt: mt.group(1) + block + mt.group(2), text)


def main(argv=None) -> int:
    from .utils import atomic_write_text

    for path, (prefix, block) in generated_files().items():
        new = render(path, prefix, block)
        if new != path.read_text(encoding="utf-8"):
            atomic_write_text(path, new)
            print(f"updated {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
