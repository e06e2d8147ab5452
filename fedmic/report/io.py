"""Writing tables (CSV + Markdown + LaTeX) and figures (PNG + PDF).

Every table and figure of the pipeline goes through ``write_table`` and
``save_figure``, so they share one look and one guarantee: each file is written
to a temporary name and renamed into place, so a reader (or Snakemake after a
crash) sees a complete file or none.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # headless runs (CI, SLURM); left alone if a caller already chose a backend
    matplotlib.use("Agg")

import numpy as np
import pandas as pd

from ..utils import atomic_write_bytes, atomic_write_text

PM = "±"
# a number, or mean ± std, with the health marks of fedmic.report.views.HEALTH if any
_NUM_RE = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?(\s*±\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?)?(\s*[†‡]+)?\s*$")

# --------------------------------------------------------------------------- formatting


def mean_std(values: Iterable[float], digits: int = 3, ddof: int = 1) -> str:
    """'mean ± std' over seeds, e.g. '0.912 ± 0.013'.

    One value gives just the mean (a std of one seed is undefined); any non-finite
    value gives 'n/a' so a failed seed is visible rather than averaged away.
    """
    v = np.asarray(list(values), dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    if not np.all(np.isfinite(v)):
        return "n/a"
    m = float(v.mean())
    if v.size <= ddof:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} {PM} {float(v.std(ddof=ddof)):.{digits}f}"


MISSING = "–"


def _fmt_cell(x, digits: int) -> str:
    if x is None:
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{digits}f}"
    if not isinstance(x, str) and pd.api.types.is_scalar(x) and pd.isna(x):
        return MISSING
    return str(x)


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
# symbols the tables use, in forms that compile under plain pdflatex
_TEX_UNICODE = {
    "±": r"$\pm$", "λ": r"$\lambda$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
    "→": r"$\rightarrow$", "–": "--", "—": "---", "τ": r"$\tau$", "α": r"$\alpha$",
    "β": r"$\beta$", "≈": r"$\approx$", "†": r"\textdagger{}", "‡": r"\textdaggerdbl{}",
}


def latex_escape(s: str) -> str:
    """Escape text for LaTeX (special characters and a few Unicode symbols)."""
    out = []
    for ch in str(s):
        out.append(_TEX_SPECIAL.get(ch) or _TEX_UNICODE.get(ch) or ch)
    return "".join(out)


def _md_escape(s: str) -> str:
    return str(s).replace("|", r"\|").replace("\n", " ")


def _best_mask(values: pd.Series, how: str, digits: int) -> np.ndarray:
    """Rows holding the best value; ties are judged at the printed precision."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(v)
    mask = np.zeros(len(v), dtype=bool)
    if not ok.any():
        return mask
    r = np.round(v, digits)
    best = np.nanmax(np.where(ok, r, np.nan)) if how == "max" else np.nanmin(np.where(ok, r, np.nan))
    mask[ok] = r[ok] == best
    return mask


def _is_numeric_like(col: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return True
    vals = [x for x in col if not (x is None or (isinstance(x, float) and math.isnan(x)))]
    return bool(vals) and all(isinstance(x, str) and (_NUM_RE.match(x) or x in ("n/a", MISSING)) for x in vals)


def _label_from_stem(stem: Path) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9]+", "-", stem.name).strip("-").lower()


# --------------------------------------------------------------------------- tables


def write_table(
    df: pd.DataFrame,
    stem: str | Path,
    caption: str,
    bold: Mapping[str, str] | None = None,
    index: bool = False,
    bold_by: Mapping[str, str] | None = None,
    digits: int = 3,
    group_by: str | list[str] | None = None,
    formats: Mapping[str, str | Callable[[object], str]] | None = None,
) -> list[Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex``; return their paths.

    bold:     column -> "max" | "min": the best value of that column is bold
              (all of them when tied after rounding to ``digits`` decimals).
    bold_by:  display column -> numeric column ranking it (for "0.912 ± 0.013"
              cells); these helper columns stay in the CSV only.
    digits:   decimals for float cells in md/tex (the CSV keeps full precision).
    group_by: pick the best within each group of rows sharing these columns
              (e.g. per dataset) instead of over the whole column.
    formats:  column -> format spec (e.g. "g", ",.0f") or callable for md/tex
              cells of that column; missing values still print as "–".
    """
    stem = Path(stem)
    bold = dict(bold or {})
    bold_by = dict(bold_by or {})
    data = df.reset_index() if index else df.reset_index(drop=True)
    data.columns = [str(c) for c in data.columns]
    if len(set(data.columns)) != len(data.columns):
        raise ValueError(f"table {stem.name}: duplicate column names {list(data.columns)}")
    for col, how in bold.items():
        if how not in ("max", "min"):
            raise ValueError(f"bold[{col!r}] must be 'max' or 'min', got {how!r}")
        if col not in data.columns:
            raise ValueError(f"bold column {col!r} is not in the table ({list(data.columns)})")
    for col, num in bold_by.items():
        if col not in data.columns or num not in data.columns:
            raise ValueError(f"bold_by {col!r} -> {num!r}: both columns must be in the table")
        if not pd.api.types.is_numeric_dtype(data[num]):
            raise ValueError(f"bold_by helper column {num!r} must be numeric")
    groups = [group_by] if isinstance(group_by, str) else list(group_by or [])
    for g in groups:
        if g not in data.columns:
            raise ValueError(f"group_by column {g!r} is not in the table")

    helper_cols = set(bold_by.values())
    shown = [c for c in data.columns if c not in helper_cols]

    # bold masks over the shown columns
    masks: dict[str, np.ndarray] = {}
    for col, how in bold.items():
        src = bold_by.get(col, col)
        if src == col and not pd.api.types.is_numeric_dtype(data[col]):
            raise ValueError(
                f"bold column {col!r} is not numeric; pass bold_by={{{col!r}: <numeric column>}}"
            )
        m = np.zeros(len(data), dtype=bool)
        if groups:
            for _, sub in data.groupby(groups, sort=False, dropna=False):
                m[sub.index.to_numpy()] = _best_mask(sub[src], how, digits)
        else:
            m = _best_mask(data[src], how, digits)
        masks[col] = m

    formats = dict(formats or {})
    for col in formats:
        if col not in data.columns:
            raise ValueError(f"formats column {col!r} is not in the table")

    def fmt(col: str, x) -> str:
        f = formats.get(col)
        if f is None or _fmt_cell(x, digits) == MISSING:
            return _fmt_cell(x, digits)
        return f(x) if callable(f) else format(x, f)

    cells = {c: [fmt(c, x) for x in data[c]] for c in shown}
    right = {c: _is_numeric_like(data[c]) for c in shown}

    # --- Markdown
    md_rows = []
    header = [_md_escape(c) for c in shown]
    md_rows.append("| " + " | ".join(header) + " |")
    md_rows.append("|" + "|".join("---:" if right[c] else ":---" for c in shown) + "|")
    for r in range(len(data)):
        row = []
        for c in shown:
            s = _md_escape(cells[c][r])
            if c in masks and masks[c][r]:
                s = f"**{s}**"
            row.append(s)
        md_rows.append("| " + " | ".join(row) + " |")
    md = "\n".join(md_rows) + "\n\nTable: " + _md_escape(caption) + "\n"

    # --- LaTeX (booktabs)
    spec = "".join("r" if right[c] else "l" for c in shown)
    tex_lines = [
        "% generated by fedmic.report.io.write_table; needs \\usepackage{booktabs}",
        "\\begin{table}[htbp]",
        "\\centering",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{{_label_from_stem(stem)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in shown) + " \\\\",
        "\\midrule",
    ]
    for r in range(len(data)):
        row = []
        for c in shown:
            s = latex_escape(cells[c][r])
            if c in masks and masks[c][r]:
                s = f"\\textbf{{{s}}}"
            row.append(s)
        tex_lines.append(" & ".join(row) + " \\\\")
    tex_lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    tex = "\n".join(tex_lines) + "\n"

    csv = data.to_csv(index=False)

    # everything is rendered before anything is written, so a formatting error
    # leaves no partial set of files behind
    out = []
    for suffix, text in ((".csv", csv), (".md", md), (".tex", tex)):
        out.append(atomic_write_text(stem.with_name(stem.name + suffix), text))
    return out


# --------------------------------------------------------------------------- figures


def save_figure(fig, stem: str | Path, dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (``dpi``) and ``<stem>.pdf``, then close it."""
    import io

    import matplotlib.pyplot as plt

    stem = Path(stem)
    try:
        blobs = []
        for fmt in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
            blobs.append((stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))
        return [atomic_write_bytes(p, b) for p, b in blobs]
    finally:
        plt.close(fig)
