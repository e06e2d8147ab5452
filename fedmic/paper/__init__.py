"""The paper's tables and figures: one module each in this package, named as the output is
(`t4.py` is table t4: `snakemake table_t4`, `results/tables/t4.csv`, `tables.t4` in the config).

The registry is the package's files (`outputs()`): adding a table or a figure is one new module
here and `python -m fedmic.paper`, which writes what is derived from the modules: the
`tables:`/`figures:` part of workflow/schemas/config.schema.yaml, each output's report caption
workflow/report/<name>.rst (Snakemake's report() reads captions from files) and the listing in
docs/paper.md (tests check that the committed files are current).

A module declares (docs/extending.md has a worked example):

- ``KIND``: "table" or "figure";
- ``CAPTION``: its report caption, opening with a bold title (``**Table T4 — communication.**``);
- ``OPTIONS``: the keys of its config section besides ``enabled`` (every output has that one),
  as `Option`s: name, JSON schema (type, bounds), default, meaning;
- what it reads, one of: ``runs(config) -> [grid.RunKey]`` (built with fedmic.grid's helpers;
  the workflow collects them into one results file) or ``partitions(config) -> [(dataset, lam,
  clients, seed)]`` (the partition files themselves; the labels are read from the data);
- ``render(inputs: Inputs, options: dict, select: str) -> Table | Figure``: the output from
  its inputs and its resolved options (shared helpers: fedmic.report.tables, .figures, .views);
- ``ORDER``: its place in the listing, among its kind (the paper's numbering); of outputs that
  read the same runs, the first names their results file (tidy/<name>.csv.gz).

and may declare:

- ``VALSEL = True``: it has a ``<name>_valsel`` variant (values at the round chosen on
  validation); ``NO_VALSEL`` says why it has none, where one would be expected;
- ``applies(config) -> bool`` with ``APPLIES`` (when, in words): built only for configs it
  applies to (the tuning table: configs that tune), with no ``enabled`` needed;
- ``arms(config) -> {arm: spec}`` and ``arm_origin(config, arm) -> str``: arms it defines
  beyond `methods` (T5's ablations, T6's sensitivity variants), and where, for error messages.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

from fedmic.config import ConfigError

KINDS = ("table", "figure")
SELECTS = ("last", "valsel")


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One key of an output's config section: its JSON schema (type and bounds, as the config
    check applies them), its meaning, and its default: a value, or `default_from(config)` with
    `default_text` saying what it is (an axis defaults to the top-level one)."""

    name: str
    schema: dict
    meaning: str
    default: Any = None
    default_from: Callable[[dict], Any] | None = None
    default_text: str | None = None

    def value(self, config: dict, section: Mapping) -> Any:
        if self.name in section:
            return section[self.name]
        return self.default_from(config) if self.default_from else self.default

    def default_words(self) -> str:
        if self.default_text:
            return self.default_text
        return "null" if self.default is None else repr(self.default).lower() if isinstance(self.default, bool) \
            else repr(self.default)

    def schema_entry(self) -> dict:
        entry = dict(self.schema)
        if self.default_from is None and "$ref" not in entry:
            entry["default"] = self.default
        entry["description"] = f"{self.meaning} (default: {self.default_words()})"
        return entry


ENABLED = Option("enabled", {"$ref": "#/definitions/enabled"}, "false: not built, and its runs are not planned",
                 default=True)


def axes(what: str) -> tuple[Option, Option, Option]:
    """datasets, lams and seeds of the output's runs; each defaults to the top-level list."""
    return (Option("datasets", {"$ref": "#/definitions/datasets"}, f"datasets of {what}",
                   default_from=lambda c: c["datasets"], default_text="the top-level datasets"),
            Option("lams", {"$ref": "#/definitions/lams"}, f"Dirichlet λ of {what}",
                   default_from=lambda c: c["lams"], default_text="the top-level lams"),
            Option("seeds", {"$ref": "#/definitions/seeds"}, f"seeds of {what}",
                   default_from=lambda c: c["seeds"], default_text="the top-level seeds"))


def arm_list(what: str) -> Option:
    """arms: names of arms defined in the config; default every arm under methods."""
    return Option("arms", {"$ref": "#/definitions/arm_names"}, what,
                  default_from=lambda c: list(c["methods"]), default_text="every arm under methods")


def base_arm(what: str, methods: Sequence[str]) -> Option:
    """base: the arm (under methods) an output varies; it must run one of `methods`."""
    return Option("base", {"type": "string"}, f"{what}; an arm under methods running {' or '.join(methods)}",
                  default="fedmic")


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Output:
    """A table or a figure: its module, with what every output has filled in."""

    name: str
    module: ModuleType = field(repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.module.KIND

    @property
    def caption(self) -> str:
        return self.module.CAPTION

    @property
    def section(self) -> str:
        """Where its options are in the config: tables.t4, figures.f3."""
        return f"{self.kind}s.{self.name}"

    @property
    def target(self) -> str:
        return f"{self.kind}_{self.name}"

    @property
    def options(self) -> tuple[Option, ...]:
        return (ENABLED, *self.module.OPTIONS)

    @property
    def reads_partitions(self) -> bool:
        return hasattr(self.module, "partitions")

    @property
    def valsel(self) -> bool:
        return getattr(self.module, "VALSEL", False)

    def given(self, config: dict) -> dict:
        """Its section as the config writes it ({} when absent)."""
        return (config.get(f"{self.kind}s") or {}).get(self.name) or {}

    def resolved(self, config: dict) -> dict:
        """Every option's value for this config: the section's, else the default."""
        section = self.given(config)
        return {o.name: o.value(config, section) for o in self.options}

    def applies(self, config: dict) -> bool:
        return getattr(self.module, "applies", lambda c: True)(config)

    def enabled(self, config: dict) -> bool:
        """Built unless its section says `enabled: false` or it does not apply to the config."""
        return self.applies(config) and self.given(config).get("enabled", True) is not False

    def runs(self, config: dict) -> list:
        """The runs it reads ([] for an output that reads partition files)."""
        return [] if self.reads_partitions else list(self.module.runs(config))

    def partitions(self, config: dict) -> list[tuple]:
        return list(self.module.partitions(config)) if self.reads_partitions else []

    def arms(self, config: dict) -> dict[str, dict]:
        """Arms it defines beyond `methods` (none unless enabled)."""
        if not hasattr(self.module, "arms") or not self.enabled(config):
            return {}
        return self.module.arms(config)

    def covers(self, config: dict) -> list[tuple[str, float]]:
        """(dataset, lam) of what it shows, in the order of its runs or partitions."""
        if self.reads_partitions:
            return [(d, float(lam)) for d, lam, _, _ in self.partitions(config)]
        return [(k.dataset, k.lam) for k in self.runs(config)]

    def render(self, inputs: "Inputs", options: Mapping | None = None, select: str = "last"):
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options or {}) - set(known))
        if unknown:
            raise ValueError(f"{self.kind} {self.name}: unknown option(s) {', '.join(map(repr, unknown))}; valid "
                             f"options: {', '.join(known)}")
        # the options the config left out take their defaults (the workflow passes them all)
        resolved = {o.name: o.default for o in self.options if o.default_from is None}
        return self.module.render(inputs, {**resolved, **(options or {})}, select)


REQUIRED = ("KIND", "CAPTION", "OPTIONS", "ORDER", "render")


def _check_module(name: str, module: ModuleType) -> None:
    where = f"fedmic/paper/{name}.py"
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise TypeError(f"{where} declares no {', '.join(missing)}; every table or figure module declares "
                        f"{', '.join(REQUIRED)} and runs() or partitions() (fedmic/paper/__init__.py)")
    if module.KIND not in KINDS:
        raise TypeError(f"{where}: KIND is {module.KIND!r}; it must be one of {', '.join(KINDS)}")
    if hasattr(module, "runs") == hasattr(module, "partitions"):
        raise TypeError(f"{where} must declare exactly one of runs(config) and partitions(config)")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name.endswith("_valsel"):
        raise TypeError(f"{where}: a table or figure name is lower-case letters, digits and _ (not ending "
                        "in _valsel): it names the target, the output files and the config section")


@functools.lru_cache(maxsize=None)
def _scan(path: tuple[str, ...]) -> dict[str, Output]:
    found = []
    for info in pkgutil.iter_modules(list(path)):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        _check_module(info.name, module)
        found.append(Output(info.name, module))
    found.sort(key=lambda o: (KINDS.index(o.kind), o.module.ORDER, o.name))
    return {o.name: o for o in found}


def outputs(kind: str | None = None) -> dict[str, Output]:
    """Every table and figure module of this package (tables first, each kind in ORDER), or
    those of one kind."""
    found = _scan(tuple(sys.modules[__name__].__path__))
    return {n: o for n, o in found.items() if kind is None or o.kind == kind}


def get(kind: str, name: str) -> tuple[Output, str]:
    """The output a command-line name means and its row selection: `t2_valsel` is T2 with the
    values at the round chosen on validation. Figure names may use - for _."""
    key, select = name.lower().replace("-", "_"), "last"
    if key.endswith("_valsel"):
        key, select = key[: -len("_valsel")], "valsel"
    known = outputs(kind)
    if key not in known:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(known)}")
    out = known[key]
    if select == "valsel" and not out.valsel:
        why = getattr(out.module, "NO_VALSEL", None)
        raise ValueError(f"{key} has no _valsel variant" + (f" ({why})" if why else ""))
    return out, select


def short(name: str) -> str:
    """An output's name from its module's __name__ (fedmic.paper.t4 -> t4), or the name itself."""
    return name.rpartition(".")[2]


def options(config: dict, name: str) -> dict:
    """The resolved options of output `name` (or of the module named `name`) for this config."""
    return outputs()[short(name)].resolved(config)


def runs(config: dict, name: str) -> list:
    """The runs output `name` reads for this config."""
    return outputs()[short(name)].runs(config)


def section(name: str) -> str:
    """Where output `name` (or the module named `name`) is configured: tables.t4, figures.f3."""
    return outputs()[short(name)].section


def enabled(config: dict, kind: str | None = None) -> list[Output]:
    return [o for o in outputs(kind).values() if o.enabled(config)]


# --------------------------------------------------------------------------- inputs and building
@dataclass
class Inputs:
    """What an output is rendered from: results files or run JSONs (`tidy()`), or partition
    files (`paths` with `labels`, read from the MedMNIST folder `root`); tests may give the
    tidy frame itself."""

    paths: Sequence[str | Path] = ()
    root: str | None = None
    frame: Any = None

    def tidy(self):
        if self.frame is not None:
            return self.frame
        from fedmic.report import tidy

        return tidy.load(self.paths)

    def partition_paths(self) -> list[Path]:
        return [Path(p) for p in self.paths]

    def labels(self):
        from fedmic.report import labels_loader

        return labels_loader(self.root)


def render(kind: str, name: str, inputs: Inputs, options: Mapping | None = None):
    """The Table or matplotlib Figure `name` (a table name may end in _valsel)."""
    out, select = get(kind, name)
    return out.render(inputs, options, select)


def build(kind: str, name: str, inputs: Sequence[str | Path], out_stem: str | Path, root: str | None = None,
          options: Mapping | None = None) -> list[Path]:
    """Write `name` as <out_stem>.csv/.md/.tex (a table) or .png/.pdf (a figure); `options`
    are checked as the config check does (the same schema)."""
    out, select = get(kind, name)
    if options:
        check_options(out, options)
    made = out.render(Inputs(list(inputs), root), options, select)
    if kind == "table":
        return made.write(out_stem)
    from fedmic.report.io import save_figure

    return save_figure(made, out_stem)


def check_options(out: Output, options: Mapping) -> None:
    """Refuse options as the config check would: the output's section of the schema. An
    installed package has no workflow/schemas/ beside it (the workflow that runs it checked its
    config, options included, against its own); options that refer to the schema's shared
    definitions (datasets, arms, ...) are then checked for their names only."""
    from fedmic import schema

    section = schema_properties()[f"{out.kind}s"]["properties"][out.name]
    if schema.SCHEMA_FILE.exists():
        section = {**section, "definitions": schema.load_schema()["definitions"]}
    else:
        section = {**section, "properties": {k: ({} if "$ref" in v else v) for k, v in section["properties"].items()}}
    if problem := schema.config_problem(dict(options), section):
        where = problem.replace("the config's top level", "its section")
        raise ValueError(f"--options of {out.kind} {out.name}: {where}")


# --------------------------------------------------------------------------- the workflow's questions
def caption_title(caption: str) -> str:
    """The title a report caption opens with, ``**Title.**``."""
    m = re.match(r"\s*\*\*(.+?)\.?\*\*", caption, re.S)
    if not m:
        raise ValueError(f"report caption has no bold title to open it: {caption[:60]!r}")
    return " ".join(m.group(1).split())


def report_labels(config: dict, name: str) -> dict[str, str]:
    """Labels of a report item: its title (from its caption, so the two never differ) and the
    datasets and λ it covers."""
    out = outputs()[name]
    keys = out.covers(config)
    return {
        "item": caption_title(out.caption),
        "datasets": ", ".join(dict.fromkeys(d for d, _ in keys)),
        "λ": ", ".join(f"{lam:g}" for lam in sorted({lam for _, lam in keys})),
    }


def results_file_name(config: dict, name: str) -> str:
    """The results file an output reads: named by the first enabled output that reads exactly
    the same runs (T2, T4, T8, T9 and the figures on T2's runs share tidy/t2.csv.gz)."""
    runs = outputs()[name].runs(config)
    return next(o.name for o in enabled(config) if not o.reads_partitions and o.runs(config) == runs)


def target_problem(config: dict, targets: list[str]) -> str | None:
    """Why a table_*/figure_* target cannot be built: its section is switched off, it does not
    apply to the config, or no such output exists (Snakemake alone says only 'No rule to
    produce ...')."""
    for t in targets:
        kind, _, name = t.partition("_")
        if kind not in KINDS or "/" in t:
            continue
        known = outputs(kind)
        if name not in known:
            return f"unknown target {t}; {kind} targets: {', '.join(o.target for o in known.values())}"
        out = known[name]
        if not out.applies(config):
            return f"target {t}: {out.section} is built only {out.module.APPLIES}"
        if not out.enabled(config):
            return (f"target {t}: {out.section} is switched off in the config ({out.section}.enabled: false); "
                    "remove that line (or set it to true) to build it")
    return None


def base_of(config: dict, out_name: str) -> str:
    """The arm an output varies (its `base` option, T5's and T6's): an arm under `methods`."""
    out = outputs()[short(out_name)]
    base = out.resolved(config)["base"]
    if base not in config["methods"]:
        raise ConfigError(f"{out.section}.base: there is no arm {base!r} under methods (defined: "
                          f"{', '.join(config['methods'])}); add one or set {out.section}.base, "
                          f"or switch the table off with {out.section}.enabled: false")
    return base


def check_base_method(config: dict, out_name: str, base: str, method: str, methods: Sequence[str]) -> None:
    """The base arm runs one of `methods`: the module's BASE_METHODS, one declaration for this
    check and for the rows its table keeps (runs_of_methods)."""
    if method not in methods:
        out = outputs()[short(out_name)]
        raise ConfigError(f"{out.section}.base: the arm {base!r} runs method {method}, and {out.name} reads "
                          f"{' or '.join(methods)} runs only; set {out.section}.base to an arm of method "
                          f"{' or '.join(methods)}")


def runs_of_methods(tidy, methods: Sequence[str], what: str):
    """The rows of runs of `methods` (with their floors, which belong to the same runs)."""
    from fedmic.methods import METHODS

    sub = tidy[tidy["method"].isin(list(methods))]
    if sub.empty:
        names = " or ".join(f"{METHODS[m].pretty} runs (config method {m!r})" for m in methods)
        raise ValueError(f"{what}: no {names} among the inputs")
    return sub


# --------------------------------------------------------------------------- generated files
from fedmic import generated  # noqa: E402
from fedmic.schema import SCHEMA_FILE  # noqa: E402  (the generated files sit in the checkout)

REPO = SCHEMA_FILE.parents[2]
CAPTIONS = REPO / "workflow" / "report"
DOCS_FILE = REPO / "docs" / "paper.md"
BEGIN = "BEGIN generated by `python -m fedmic.paper` from fedmic/paper/; do not edit by hand"


def schema_properties() -> dict:
    """The config's `tables:` and `figures:` sections: one per output, its options."""
    props = {}
    for kind in KINDS:
        props[f"{kind}s"] = {
            "type": "object",
            "additionalProperties": False,
            "description": f"one section per {kind} (fedmic/paper/<name>.py; docs/paper.md); "
                           f"{{name: {{enabled: false}}}} switches one off",
            "properties": {o.name: {"type": "object", "additionalProperties": False,
                                    "description": caption_title(o.caption),
                                    "properties": {opt.name: opt.schema_entry() for opt in o.options}}
                           for o in outputs(kind).values()},
        }
    return props


def _schema_block() -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def mapping(dumper, data):  # leaves on one line
        flow = not any(isinstance(v, (dict, list)) for v in data.values()) or "$ref" in data
        return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)

    Dumper.add_representer(dict, mapping)
    text = yaml.dump(schema_properties(), Dumper=Dumper, sort_keys=False, default_flow_style=None, width=120,
                     allow_unicode=True)
    return "".join(f"  {line}\n" for line in text.splitlines())


def caption_file(name: str) -> Path:
    return CAPTIONS / f"{name}.rst"


def docs_listing() -> str:
    rows = []
    for kind in KINDS:
        rows += [f"### {kind.capitalize()}s", "",
                 "| name | what it shows | reads | option | default | meaning |", "|---|---|---|---|---|---|"]
        for o in outputs(kind).values():
            reads = "partition files" if o.reads_partitions else "runs"
            if getattr(o.module, "APPLIES", None):
                reads += f" (built only {o.module.APPLIES})"
            for i, opt in enumerate(o.options):
                first = (f"`{o.name}` (`snakemake {o.target}`)", caption_title(o.caption), reads)
                head = first if i == 0 else ("", "", "")
                meaning = opt.meaning.replace("|", "\\|")
                rows.append(f"| {' | '.join(head)} | `{opt.name}` | {opt.default_words()} | {meaning} |")
        rows.append("")
    return "\n".join(rows)


def generated_files() -> dict[Path, str]:
    """{file: its whole current text} for every file made from the modules."""
    files = {SCHEMA_FILE: _render_block(SCHEMA_FILE, "  # ", _schema_block()),
             DOCS_FILE: _render_block(DOCS_FILE, "<!-- ", docs_listing())}
    for o in outputs().values():
        files[caption_file(o.name)] = o.caption.strip() + "\n"
    return files


def _render_block(path: Path, prefix: str, block: str) -> str:
    return generated.replace_block(path, prefix, BEGIN, block)


def main(argv=None) -> int:
    generated.write(generated_files(), REPO)
    return 0
