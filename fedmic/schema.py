"""The workflow config's shape, checked against workflow/schemas/config.schema.yaml, with the
first problem said in one line that names the key and what is valid there (jsonschema's own
messages span several lines and never list the valid keys)."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
_TYPES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
          "object": "a mapping (key: value)", "array": "a list", "null": "null"}


def load_schema(path: str | Path = SCHEMA_FILE) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "the config's top level"


def _say(error) -> str:
    where, v, kind, arg, schema = _where(error), error.instance, error.validator, error.validator_value, error.schema
    if kind == "additionalProperties":
        unknown = sorted(set(v) - set(schema.get("properties", {})))
        valid = ", ".join(schema.get("properties", {})) or "none"
        return f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {valid}"
    if kind == "required":
        missing = [k for k in arg if k not in v]
        return f"{where}: missing key(s) {', '.join(map(repr, missing))} (see config/config.yaml for an example)"
    # under propertyNames the instance is a key, not a value
    what = "key" if "propertyNames" in error.relative_schema_path else "value"
    if kind == "enum":
        return f"{where}: {what} {v!r} is not one of: {', '.join(map(str, arg))}"
    if kind == "type":
        want = " or ".join(_TYPES.get(t, t) for t in ([arg] if isinstance(arg, str) else arg))
        return f"{where} must be {want}, got {v!r}"
    if kind in _BOUNDS:
        return f"{where} must be {_BOUNDS[kind]} {arg}, got {v!r}"
    if kind in ("minItems", "maxItems"):
        return f"{where} needs {'at least' if kind == 'minItems' else 'at most'} {arg} item(s), got {v!r}"
    if kind == "minProperties":
        return f"{where} needs at least {arg} entry, got none"
    if kind == "not":
        return f"{where}: key {v!r} is not allowed here"
    if kind == "pattern":
        return f"{where}: {what} {v!r} is not valid"
    return f"{where}: {error.message}"


def config_problem(config, schema: dict | None = None) -> str | None:
    """None if `config` fits the schema, else one line about the first problem (in key order)."""
    import jsonschema

    schema = load_schema() if schema is None else schema
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    error = errors[0]
    while error.context:  # anyOf/oneOf: the most specific reason
        error = jsonschema.exceptions.best_match(error.context)
    text = _say(error)
    note = error.schema.get("description") if isinstance(error.schema, dict) and error.schema is not schema else None
    return f"{text} [{' '.join(note.split())}]" if note else text


def replace_sections(config: dict, files: list[tuple[str, dict]], overrides: dict,
                     schema: dict | None = None) -> str | None:
    """Apply the `replace` key of config files to `config`, Snakemake's merge of config/config.yaml,
    the --configfile `files` ((name, content), in order) and the --config `overrides`, in place.

    Snakemake merges nested mappings key by key, so a file listing its own arms would keep
    every arm of the defaults too. A file's `replace: [methods, tables]` makes those sections
    its own: each is rebuilt from the last file that replaces it, updated by the files after
    it and by --config, as Snakemake would have merged them. What came before that file needs
    no reading back, so this works on a module's config too. `replace` itself is dropped, so
    the resolved config is the one the files mean. None, or the problem in one line."""
    from snakemake.utils import update_config

    schema = load_schema() if schema is None else schema
    allowed = schema["properties"]["replace"]["items"]["enum"]
    last: dict[str, int] = {}
    contents = [content for _, content in files]
    for i, (name, content) in enumerate(files):
        sections = content.get("replace", [])
        if not (isinstance(sections, list) and all(s in allowed for s in sections)):
            return f"{name}: replace: {sections!r} is not valid; write a list of sections among: {', '.join(allowed)}"
        last.update((s, i) for s in sections)
    missing = object()
    for section, i in last.items():
        merged = {"v": copy.deepcopy(contents[i][section]) if section in contents[i] else missing}
        for later in [*contents[i + 1:], overrides]:
            if section in later:
                if isinstance(merged["v"], dict):
                    update_config(merged, {"v": copy.deepcopy(later[section])})
                else:
                    merged["v"] = copy.deepcopy(later[section])
        if merged["v"] is missing:
            config.pop(section, None)
        else:
            config[section] = merged["v"]
    config.pop("replace", None)
    return None
