"""Fingerprints of everything a workflow run computes, to check that a refactor changes no result.

`manifest(results)` maps each output under a results folder to a SHA-256: of the file's bytes
for run JSONs, partitions and tables (CSV, Markdown, LaTeX), of the decoded pixels for the PNG
figures. What is measured rather than computed is left out, as it differs between any two runs:
timing files and the rows the results files take from them (wall seconds, peak memory), T8's
columns of them (and its Markdown and LaTeX, which print and bold them), provenance.yaml (git
state, date) and PDFs (their creation date).

    python tests/golden.py results-tiny > tests/golden/tiny.json   # rewrite the golden set
    python tests/golden.py results-demo --compare before.json      # compare two runs
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

KEPT = (".json", ".csv", ".csv.gz", ".md", ".tex", ".png")
LEFT_OUT = (".timing.json", ".ckpt")
MEASURED_METRICS = ("train_s_per_round", "train_s_per_client", "peak_rss_mb")  # scope "cost" rows
MEASURED_T8_COLUMNS = ("train s/", "peak RSS")


def pixels_digest(png: Path) -> str:
    import matplotlib.image

    img = matplotlib.image.imread(png)
    return "pixels:" + hashlib.sha256(f"{img.shape}{img.dtype}".encode() + img.tobytes()).hexdigest()


def computed_digest(path: Path, frame_filter) -> str:
    import pandas as pd

    frame = frame_filter(pd.read_csv(path, keep_default_na=False, dtype=str))
    return "computed:" + hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def without_measured_rows(tidy):
    return tidy[~((tidy["scope"] == "cost") & tidy["metric"].isin(MEASURED_METRICS))]


def without_measured_columns(table):
    return table[[c for c in table.columns if not c.startswith(MEASURED_T8_COLUMNS)]]


def manifest(results: str | Path) -> dict[str, str]:
    root = Path(results)
    out = {}
    for f in sorted(root.rglob("*")):
        name, rel = f.name, f.relative_to(root).as_posix()
        if not f.is_file() or name.startswith(".") or name.endswith(LEFT_OUT) or not name.endswith(KEPT):
            continue
        if name.endswith(".png"):
            out[rel] = pixels_digest(f)
        elif name.endswith(".csv.gz"):
            out[rel] = computed_digest(f, without_measured_rows)
        elif rel == "tables/t8.csv":
            out[rel] = computed_digest(f, without_measured_columns)
        elif not rel.startswith("tables/t8."):
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    lines = [f"missing: {k}" for k in sorted(set(expected) - set(actual))]
    lines += [f"not in the golden set: {k}" for k in sorted(set(actual) - set(expected))]
    lines += [f"changed: {k}" for k in sorted(set(expected) & set(actual)) if expected[k] != actual[k]]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a results folder (results-tiny, results-demo, ...)")
    ap.add_argument("--compare", help="a manifest written before: print the differences, exit 1 if any")
    args = ap.parse_args(argv)
    current = manifest(args.results)
    if args.compare:
        diff = differences(json.loads(Path(args.compare).read_text()), current)
        print("\n".join(diff) if diff else f"identical: {len(current)} files")
        return 1 if diff else 0
    json.dump(current, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
