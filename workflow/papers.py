"""Paper tables: every published figure beside the reproduced one, the difference and a verdict.

    python -m workflow.papers --paper yuv420_mobilenetv2 --params params.yaml \
        --out results/papers/yuv420_mobilenetv2

Reads, for paper <id>:

* ``config/papers/<id>.yaml``: the published reference (the extraction of the seed
  document, copied unchanged from ../shared/papers);
* ``config/papers/<id>/mapping.yaml``: which published cell goes with which
  reproduced value (the mapping format is documented in config/papers/README.md);
* ``config/papers/<id>/small.yaml`` and ``full.yaml``: the params overlays of the
  two configurations, used to tell which scale the results come from;
* the result tables named in :data:`SOURCES` that exist (a missing table, column
  or row makes the verdict "not run", naming the pipeline part that provides it).

Writes ``table.md``, ``table.csv``, ``table.tex`` and ``verdicts.json`` (DVC metrics).
Nothing is estimated: a value is either read from a result table or it is absent.
"""
import argparse
import math
import re
from pathlib import Path

import pandas as pd

from workflow.config import load_params, read_yaml
from workflow.errors import UserError, cli
from workflow.io import atomic_path, read_json, write_json, write_text

PAPERS_DIR = Path("config/papers")
PAPERS = ("yuv420_mobilenetv2", "cifar_max78000", "od_quant_kd_imx8", "yolov4tiny_pruning", "rtbench_tflite")
# Result tables a mapping can read, by the name used in mapping.yaml `source:`. A {name} in
# the path matches one folder per device / model; the tables are stacked with that column.
SOURCES = {
    "summary": "results/summary.csv",                       # foundation + optimization variants
    "pipeline": "results/pipeline/{device}/table.csv",      # pre-processing pipeline per resolution
    "pruning": "results/models/{model}/prune_report.json",  # parameters per pruning iteration
    "detection": "results/detection/summary.csv",           # detection track
}
WITHIN, DIFFERS, NOT_COMPARABLE, NOT_RUN = "within tolerance", "differs", "not comparable", "not run"
VERDICTS = (WITHIN, DIFFERS, NOT_COMPARABLE, NOT_RUN)
# When a reproduced value may be held against the published one:
#   always   - at any scale (hardware-independent ratios, counts and gaps)
#   full     - only when params.yaml is the paper's full configuration (dataset, epochs, width)
#   hardware - only at full scale AND on a device listed in the mapping's same_hardware_devices
#   never    - the pipeline reproduces the method on a different network (the row's note says which)
COMPARE = ("always", "full", "hardware", "never")
OPS = {
    "ratio_pct": lambda a, b: 100.0 * a / b,          # a as a percentage of b
    "diff": lambda a, b: a - b,                        # a - b
    "change_pct": lambda a, b: 100.0 * (a - b) / b,    # relative change from b to a
    "reduction_pct": lambda a, b: 100.0 * (b - a) / b,  # how much smaller a is than b
}
NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(%|ms|us|s|kB|MB|M|MOps)?\s*$")


class Missing(Exception):
    """A reproduced value that is absent; the message says which part of the pipeline is missing."""


# ----------------------------------------------------------------------------- inputs
def load_paper(paper, root=PAPERS_DIR):
    """(published reference, mapping, {'small': overlay, 'full': overlay}) of one paper."""
    if paper not in PAPERS:
        raise UserError(f"--paper {paper!r}: unknown paper (known: {', '.join(PAPERS)})")
    root = Path(root)
    reference = read_yaml(root / f"{paper}.yaml", "published reference not found", "experiments")
    mapping = read_yaml(root / paper / "mapping.yaml", "paper mapping not found", "tables")
    overlays = {scale: read_yaml(root / paper / f"{scale}.yaml", f"{scale} configuration not found",
                                 "dotted params.yaml keys to values")
                for scale in ("small", "full")}
    check_mapping(mapping, root / paper / "mapping.yaml")
    return reference, mapping, overlays


def check_mapping(mapping, path):
    for key in ("paper", "title", "published_hardware", "tables"):
        if key not in mapping:
            raise UserError(f"{path}: key '{key}' is missing")
    for t, table in enumerate(mapping["tables"]):
        for key in ("id", "caption", "rows"):
            if key not in table:
                raise UserError(f"{path}: key 'tables.{t}.{key}' is missing")
        for r, row in enumerate(table["rows"]):
            where = f"tables.{t}.rows.{r}"
            for key in ("metric", "unit", "published", "reproduced", "tolerance", "compare", "needs"):
                if key not in row:
                    raise UserError(f"{path}: key '{where}.{key}' is missing")
            if row["compare"] not in COMPARE:
                raise UserError(f"{path}: key '{where}.compare': got {row['compare']!r}, expected one of "
                                f"{', '.join(COMPARE)}")
            if row["compare"] == "never" and not row.get("note"):
                raise UserError(f"{path}: key '{where}.note': compare: never needs a note saying why")
            if not set(row["tolerance"]) <= {"abs", "rel"} or not row["tolerance"]:
                raise UserError(f"{path}: key '{where}.tolerance': expected abs and/or rel")
            for side in ("published", "reproduced"):
                spec = row[side]
                if "op" in spec and spec["op"] not in OPS:
                    raise UserError(f"{path}: key '{where}.{side}.op': got {spec['op']!r}, expected one of "
                                    f"{', '.join(OPS)}")
            if "source" in row["reproduced"] and row["reproduced"]["source"] not in SOURCES:
                raise UserError(f"{path}: key '{where}.reproduced.source': got {row['reproduced']['source']!r}, "
                                f"expected one of {', '.join(SOURCES)}")


def read_table(path):
    """A CSV table, or a prune report as one row per pruning iteration (iteration 0 = unpruned)."""
    if path.suffix != ".json":
        return pd.read_csv(path)
    report = read_json(path)
    return pd.DataFrame([{"model": report["model"], "from": report["from"], "prune_ratio": report["settings"]["ratio"],
                          "prune_iteration": it["iteration"], **{k: v for k, v in it.items() if k != "iteration"}}
                         for it in report["iterations"]])


def source_files(results_root, pattern):
    """[(path, {folder key: folder name})] of the files a SOURCES entry names."""
    root = Path(results_root)
    key = re.search(r"\{(\w+)\}", pattern)
    if not key:
        return [(root / pattern, {})] if (root / pattern).exists() else []
    return [(path, {key.group(1): path.parent.name}) for path in sorted(root.glob(pattern.replace(key.group(0), "*")))]


def read_sources(results_root=".", sources=SOURCES):
    """{name: DataFrame or None (absent)} for every result table."""
    tables = {}
    for name, pattern in sources.items():
        frames = []
        for path, folder in source_files(results_root, pattern):
            try:
                frame = read_table(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, KeyError) as err:
                raise UserError(f"{path}: not a readable result table ({str(err).splitlines()[0]})") from None
            frames.append(frame.assign(**{k: v for k, v in folder.items() if k not in frame.columns}))
        tables[name] = without_emulated(pd.concat(frames, ignore_index=True)) if frames else None
    return tables


def without_emulated(table):
    """Rows of emulated devices (device_kind emulated: the qemu-user virtual board) never enter a paper
    table: their timings are the emulator's, not a board's (their accuracy is checked in the summary)."""
    if "device_kind" not in table.columns:
        return table
    return table[table["device_kind"].astype(str) != "emulated"].reset_index(drop=True)


# ----------------------------------------------------------------------------- row templates
def expand_rows(rows):
    """Rows with ``expand: [{var: value}, ...]`` become one row per item, ``{var}`` substituted."""
    out = []
    for row in rows:
        items = row.get("expand")
        if not items:
            out.append(row)
            continue
        body = {k: v for k, v in row.items() if k != "expand"}
        out += [_substitute(body, item) for item in items]
    return out


def _substitute(node, values):
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        whole = re.fullmatch(r"\{(\w+)\}", node)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]  # keeps the value's type (640 stays an int)
        return node.format(**values) if "{" in node else node
    return node


# ----------------------------------------------------------------------------- values
def to_number(cell):
    """A printed cell as a float: 67.63, "90.03%", "99.1 ms", "302.60 kB"; None when not a number."""
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float)):
        return None if isinstance(cell, float) and math.isnan(cell) else float(cell)
    match = NUMBER.match(str(cell))
    return float(match.group(1)) if match else None


def _same(cell, wanted):
    options = wanted if isinstance(wanted, list) else [wanted]
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        cell = ""  # an empty CSV cell (pandas reads NaN) matches ""
    for option in options:
        a, b = to_number(cell), to_number(option)
        if a is not None and b is not None:
            if a == b:
                return True
        elif str(cell).strip().lower() == str(option).strip().lower():
            return True
    return False


def published_value(reference, spec):
    """A published cell as a number, or an op over two cells."""
    if "op" in spec:
        a, b = published_value(reference, spec["a"]), published_value(reference, spec["b"])
        return OPS[spec["op"]](a, b) * spec.get("scale", 1.0)
    experiment = next((e for e in reference["experiments"] if e["id"] == spec["experiment"]), None)
    if experiment is None:
        raise UserError(f"mapping: experiment {spec['experiment']!r} is not in the published reference")
    tables = experiment.get("published_results") or []
    if spec["table"] >= len(tables):
        raise UserError(f"mapping: {spec['experiment']} has no published table {spec['table']}")
    rows = tables[spec["table"]].get("rows") or []
    if "row" in spec:  # a row picked by position (tables whose key column was lost to OCR)
        rows = rows[spec["row"]:spec["row"] + 1]
    rows = [r for r in rows if all(_same(r.get(k), v) for k, v in spec.get("where", {}).items())]
    if len(rows) != 1:
        raise UserError(f"mapping: {spec['experiment']} table {spec['table']} has {len(rows)} rows matching "
                        f"{spec.get('where')}, expected 1")
    value = to_number(rows[0].get(spec["column"]))
    if value is None:
        raise UserError(f"mapping: {spec['experiment']} table {spec['table']} {spec.get('where')} column "
                        f"{spec['column']!r} is not a number ({rows[0].get(spec['column'])!r})")
    return value * spec.get("scale", 1.0)


def reproduced_value(tables, spec):
    """(value, devices of the rows it comes from, note); raises Missing when absent."""
    if "op" in spec:
        a, dev_a, note_a = reproduced_value(tables, spec["a"])
        b, dev_b, note_b = reproduced_value(tables, spec["b"])
        if b == 0 and spec["op"] != "diff":
            raise Missing(f"division by zero in {spec['op']}")
        note = "; ".join(n for n in (note_a, note_b) if n)
        return OPS[spec["op"]](a, b) * spec.get("scale", 1.0), dev_a | dev_b, note
    source = spec["source"]
    table = tables.get(source)
    if table is None:
        raise Missing(f"{SOURCES[source]} absent")
    where = spec.get("where", {})
    absent = [k for k in where if k not in table.columns]
    if absent:
        raise Missing(f"{SOURCES[source]} has no column {', '.join(absent)}")
    columns = spec["column"] if isinstance(spec["column"], list) else [spec["column"]]
    column = next((c for c in columns if c in table.columns), None)
    if column is None:
        raise Missing(f"{SOURCES[source]} has no column {' / '.join(columns)}")
    mask = pd.Series(True, index=table.index)
    for key, wanted in where.items():
        mask &= table[key].map(lambda cell, wanted=wanted: _same(cell, wanted))
    rows = table[mask]
    if rows.empty:
        described = ", ".join(f"{k}={v}" for k, v in where.items())
        raise Missing(f"no row with {described} in {SOURCES[source]}")
    if "status" in rows.columns:
        ok = rows[rows["status"].astype(str) == "ok"]
        if ok.empty:
            reason = rows.iloc[0].get("reason", rows.iloc[0]["status"])
            raise Missing(f"the matching row failed ({reason})")
        rows = ok
    value = to_number(rows.iloc[0][column])
    if value is None:
        raise Missing(f"{column} is empty in {SOURCES[source]}")
    devices = set(rows.iloc[:1]["device"].astype(str)) if "device" in rows.columns else set()
    note = f"first of {len(rows)} matching rows" if len(rows) > 1 else ""
    return value * spec.get("scale", 1.0), devices, note


# ----------------------------------------------------------------------------- scale and verdicts
_ABSENT = object()


def _get(params, dotted):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def detect_scale(params, overlays):
    """'full' or 'small' when params.yaml holds every key of that overlay; else 'custom'."""
    for scale in ("full", "small"):
        overlay = overlays[scale]  # dotted keys of params.yaml -> values
        if overlay and all(_get(params, k) == v for k, v in overlay.items()):
            return scale
    return "custom"


def verdict(row, published, reproduced, devices, scale, same_hardware):
    """(verdict, note) for one row whose reproduced value exists."""
    if row["compare"] == "never":
        return NOT_COMPARABLE, row["note"]
    reasons = []
    if row["compare"] in ("full", "hardware") and scale != "full":
        reasons.append(f"scale: the {scale} configuration ran; the paper's figure needs the full one")
    if row["compare"] == "hardware" and not (devices and devices <= set(same_hardware)):
        ran = ", ".join(sorted(devices)) or "unknown"
        reasons.append(f"hardware-specific: measured on {ran}, published on the paper's hardware")
    if reasons:
        return NOT_COMPARABLE, "; ".join(reasons)
    tol = row["tolerance"]
    delta = reproduced - published
    limits = []
    if "abs" in tol:
        limits.append(abs(delta) <= tol["abs"])
    if "rel" in tol:
        limits.append(published != 0 and abs(delta) / abs(published) <= tol["rel"])
    return (WITHIN if any(limits) else DIFFERS), ""


def build_table(paper, params, tables, root=PAPERS_DIR):
    reference, mapping, overlays = load_paper(paper, root)
    scale = detect_scale(params, overlays)
    same_hardware = mapping.get("same_hardware_devices") or []
    out = []
    for table in mapping["tables"]:
        for row in expand_rows(table["rows"]):
            published = published_value(reference, row["published"])
            entry = {"table": table["id"], "metric": row["metric"], "unit": row["unit"], "published": published,
                     "reproduced": None, "delta_abs": None, "delta_rel_pct": None,
                     "tolerance": _describe_tolerance(row["tolerance"], row["unit"]), "verdict": NOT_RUN,
                     "note": ""}
            try:
                value, devices, note = reproduced_value(tables, row["reproduced"])
            except Missing as missing:
                entry["note"] = f"{row['needs']}: {missing}"
                out.append(entry)
                continue
            entry["reproduced"] = value
            entry["delta_abs"] = value - published
            entry["delta_rel_pct"] = 100.0 * (value - published) / abs(published) if published else None
            entry["verdict"], why = verdict(row, published, value, devices, scale, same_hardware)
            extra = row.get("note", "") if row["compare"] != "never" else ""
            entry["note"] = "; ".join(n for n in (why, note, extra) if n)
            out.append(entry)
    return mapping, scale, pd.DataFrame(out)


def _describe_tolerance(tol, unit):
    """"±1 pp" (absolute; a % unit is in percentage points), "±10 % rel." (relative)."""
    parts = []
    if "abs" in tol:
        parts.append(f"±{tol['abs']:g} {'pp' if unit == '%' else unit}".strip())
    if "rel" in tol:
        parts.append(f"±{100 * tol['rel']:g} % rel.")
    return " or ".join(parts)


# ----------------------------------------------------------------------------- rendering
def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"


def to_markdown(paper, mapping, scale, rows, tables):
    lines = [f"# {mapping['title']}", "",
             f"Paper `{paper}`; published on: {mapping['published_hardware']}.",
             f"Configuration of these results: **{scale}** (`config/papers/{paper}/small.yaml` / `full.yaml`).",
             "Regenerate: `snakemake --cores 8 results/papers/" + paper + "/table.md`.", "",
             "Sources: " + ", ".join(f"`{SOURCES[n]}` ({'present' if t is not None else 'absent'})"
                                     for n, t in tables.items()), "",
             "Verdicts: *within tolerance* / *differs* (comparable, outside the tolerance) / *not comparable* "
             "(hardware-specific, or the scale the figure needs did not run) / *not run* (the pipeline part "
             "that produces it has no result yet). Δ = reproduced − published; Δ rel = Δ / |published|.", ""]
    counts = rows["verdict"].value_counts()
    lines += ["Summary: " + ", ".join(f"{v}: {int(counts.get(v, 0))}" for v in VERDICTS), ""]
    for table in mapping["tables"]:
        part = rows[rows["table"] == table["id"]]
        lines += [f"## {table['caption']}", ""]
        if table.get("description"):
            lines += [table["description"].strip(), ""]
        lines += ["| metric | unit | published | reproduced | Δ | Δ rel | tolerance | verdict | note |",
                  "|---|---|---:|---:|---:|---:|---|---|---|"]
        for r in part.itertuples():
            rel = "–" if r.delta_rel_pct is None or pd.isna(r.delta_rel_pct) else f"{r.delta_rel_pct:+.1f} %"
            delta = "–" if r.delta_abs is None or pd.isna(r.delta_abs) else f"{r.delta_abs:+.4g}"
            lines.append(f"| {r.metric} | {r.unit} | {_fmt(r.published)} | {_fmt(r.reproduced)} | {delta} | "
                         f"{rel} | {r.tolerance} | {r.verdict} | {r.note.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def _tex_escape(text):
    text = str(text).replace("\\", r"\textbackslash ")
    for a, b in (("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"),
                 ("}", r"\}"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("−", "-"), ("–", "--"), ("→", r"$\to$")):
        text = text.replace(a, b)
    return text


def to_latex(paper, mapping, rows):
    out = [f"% {mapping['title']} -- generated by python -m workflow.papers --paper {paper}"]
    for table in mapping["tables"]:
        part = rows[rows["table"] == table["id"]]
        out += [r"\begin{table}[ht]", r"\centering\small",
                rf"\caption{{{_tex_escape(table['caption'])}}}", rf"\label{{tab:{paper}:{table['id']}}}",
                r"\begin{tabular}{llrrrrl}", r"\hline",
                r"Metric & Unit & Published & Reproduced & $\Delta$ & $\Delta$ rel. & Verdict \\", r"\hline"]
        for r in part.itertuples():
            rel = "--" if r.delta_rel_pct is None or pd.isna(r.delta_rel_pct) else f"{r.delta_rel_pct:+.1f}\\%"
            delta = "--" if r.delta_abs is None or pd.isna(r.delta_abs) else f"{r.delta_abs:+.4g}"
            out.append(f"{_tex_escape(r.metric)} & {_tex_escape(r.unit)} & {_tex_escape(_fmt(r.published))} & "
                       f"{_tex_escape(_fmt(r.reproduced))} & {delta} & {rel} & {_tex_escape(r.verdict)} \\\\")
        out += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def verdict_metrics(paper, scale, rows):
    counts = rows["verdict"].value_counts()
    return {"paper": paper, "scale": scale,
            "verdicts": {v.replace(" ", "_"): int(counts.get(v, 0)) for v in VERDICTS},
            "rows": {f"{r.table}/{r.metric}": {"published": r.published,
                                                "reproduced": None if pd.isna(r.reproduced) else r.reproduced,
                                                "verdict": r.verdict} for r in rows.itertuples()}}


def write_paper(paper, params, out, results_root=".", root=PAPERS_DIR):
    tables = read_sources(results_root)
    mapping, scale, rows = build_table(paper, params, tables, root)
    out = Path(out)
    with atomic_path(out / "table.csv") as tmp:
        rows.to_csv(tmp, index=False, float_format="%.6g")
    write_text(out / "table.tex", to_latex(paper, mapping, rows))
    write_json(out / "verdicts.json", verdict_metrics(paper, scale, rows))
    write_text(out / "table.md", to_markdown(paper, mapping, scale, rows, tables))  # last: marks completion
    return scale, rows


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", required=True, help=f"one of {', '.join(PAPERS)}")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--results-root", default=".", help="folder holding results/ (default: here)")
    parser.add_argument("--out", required=True, help="folder for table.md/.csv/.tex and verdicts.json")
    args = parser.parse_args(argv)
    scale, rows = write_paper(args.paper, load_params(args.params), args.out, args.results_root)
    counts = rows["verdict"].value_counts()
    print(f"{args.out}/table.md: {len(rows)} rows at {scale} scale ("
          + ", ".join(f"{v} {int(counts.get(v, 0))}" for v in VERDICTS) + ")")


if __name__ == "__main__":
    main()
