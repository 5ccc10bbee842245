"""Paper tables: every published figure beside the reproduced one, its 95 % interval, the difference and
a verdict.

    python -m workflow.papers --paper yuv420_mobilenetv2 --params params.yaml \
        --out results/papers/yuv420_mobilenetv2

Reads, for paper <id>:

* ``config/papers/<id>.yaml``: the published reference (the extraction of the seed
  document, copied unchanged from the project's source material);
* ``config/papers/<id>/mapping.yaml``: which published cell goes with which
  reproduced value, what the paper ran and on which axes the two must agree to be
  comparable (the mapping format is documented in config/papers/README.md);
* ``config/papers/<id>/small.yaml`` and ``full.yaml``: the params overlays of the
  two configurations, used to tell which scale the results come from;
* the result tables named in :data:`SOURCES` that exist (a missing table, column
  or row makes the verdict "not run", naming the pipeline part that provides it), and
  the evaluation results, whose per-image outcomes give paired intervals.

Selection is explicit: a cell whose ``where`` matches result rows with different values is
an error naming the row and the candidates, unless the mapping says how to aggregate them.
Rows that differ only in ``seed`` are the same configuration trained with several seeds:
the value is their mean, reported with the std and the per-seed values.

Writes ``table.md``, ``table.csv``, ``table.tex`` and ``verdicts.json`` (DVC metrics).
Nothing is estimated: a value is either read from a result table or it is absent.
"""
import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.accuracy import labels_digest, paired_interval, per_image_classes, seed_interval, wilson_interval
from workflow.config import load_params
from workflow.errors import UserError, cli
from workflow.io import atomic_path, read_json, write_json, write_text
from workflow.layout import PAPERS, PAPERS_DIR, SOURCES
from workflow.model_specs import base_model, model_seed
from workflow.schema import read_yaml

WITHIN, DIFFERS, INCONCLUSIVE = "within tolerance", "differs", "inconclusive at this scale"
NOT_COMPARABLE, NOT_RUN = "not comparable", "not run"
VERDICTS = (WITHIN, DIFFERS, INCONCLUSIVE, NOT_COMPARABLE, NOT_RUN)
# What a reproduced figure may depend on (a row's `depends_on`); the run must match the paper on each:
#   scale      - params.yaml is the paper's full configuration (dataset, training recipe)
#   hardware   - every result row comes from one of same_hardware_devices, none from an emulated device
#   model_size - the network's parameter count is within MODEL_SIZE_TOLERANCE of paper_setting.params
#   input_size - the model's input size is paper_setting.imgsz
#   network    - never: the DAG runs the method on another network (the row's note says which)
AXES = ("scale", "hardware", "model_size", "input_size", "network")
MODEL_SIZE_TOLERANCE = 0.10
OPS = {
    "ratio_pct": lambda a, b: 100.0 * a / b,          # a as a percentage of b
    "diff": lambda a, b: a - b,                        # a - b
    "change_pct": lambda a, b: 100.0 * (a - b) / b,    # relative change from b to a
    "reduction_pct": lambda a, b: 100.0 * (b - a) / b,  # how much smaller a is than b
}
NO_EFFECT = {"ratio_pct": 100.0, "diff": 0.0, "change_pct": 0.0, "reduction_pct": 0.0}  # op value if a == b
AGGREGATES = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max}
PROPORTIONS = {"top1": "test_images"}  # a proportion column -> the column with its number of test images
# Columns that say which configuration a result row is; they tell the candidates of an ambiguous cell apart.
IDENTITY = ("model", "seed", "artifact", "format", "precision", "quant_method", "runtime", "delegate", "device",
            "device_kind", "threads", "imgsz", "base_yaml", "kd", "kd_factor", "teacher", "leaky_slope",
            "depth_code", "prune_ratio", "prune_iteration", "width", "height")
NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(%|ms|us|s|kB|MB|M|MOps)?\s*$")


class Missing(Exception):
    """A reproduced value that is absent; the message says which part of the pipeline is missing."""


class Ambiguous(Exception):
    """A mapping cell that matches result rows with different values."""


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
            check_row(row, paper_setting(mapping, table, row), path, f"tables.{t}.rows.{r}")


def check_row(row, setting, path, where):
    for key in ("metric", "unit", "published", "reproduced", "tolerance", "depends_on", "needs"):
        if key not in row:
            raise UserError(f"{path}: key '{where}.{key}' is missing")
    axes = row["depends_on"]
    if not isinstance(axes, list) or not set(axes) <= set(AXES):
        raise UserError(f"{path}: key '{where}.depends_on': got {axes!r}, expected a list of {', '.join(AXES)}")
    if "network" in axes and not row.get("note"):
        raise UserError(f"{path}: key '{where}.note': depends_on network needs a note saying which network ran")
    for axis, key in (("model_size", "params"), ("input_size", "imgsz")):
        if axis in axes and key not in setting:
            raise UserError(f"{path}: key '{where}.paper_setting.{key}': depends_on {axis} needs the paper's {key} "
                            "(paper_setting of the row, its table or the mapping)")
    if not set(row["tolerance"]) <= {"abs", "rel"} or not row["tolerance"]:
        raise UserError(f"{path}: key '{where}.tolerance': expected abs and/or rel")
    for side in ("published", "reproduced"):
        check_spec(row[side], path, f"{where}.{side}")


def check_spec(spec, path, where):
    if "op" in spec:
        if spec["op"] not in OPS:
            raise UserError(f"{path}: key '{where}.op': got {spec['op']!r}, expected one of {', '.join(OPS)}")
        for side in ("a", "b"):
            check_spec(spec[side], path, f"{where}.{side}")
        return
    if "source" in spec and spec["source"] not in SOURCES:
        raise UserError(f"{path}: key '{where}.source': got {spec['source']!r}, expected one of {', '.join(SOURCES)}")
    if "aggregate" in spec and spec["aggregate"] not in AGGREGATES:
        raise UserError(f"{path}: key '{where}.aggregate': got {spec['aggregate']!r}, expected one of "
                        f"{', '.join(AGGREGATES)}")


def paper_setting(mapping, table, row):
    """What the paper ran for this row: the mapping's paper_setting, updated by its table's and its own
    (a key set to null there is removed)."""
    setting = {**(mapping.get("paper_setting") or {}), **(table.get("paper_setting") or {}),
               **(row.get("paper_setting") or {})}
    return {k: v for k, v in setting.items() if v is not None}


def read_prune_report(path):
    """One row per pruning iteration (0 = unpruned), with the conv output channels summed over layers."""
    report = read_json(path)
    return pd.DataFrame([{"model": report["model"], "from": report["from"], "prune_ratio": report["settings"]["ratio"],
                          "prune_iteration": it["iteration"],
                          "channels": sum(layer["channels"][i] or 0 for layer in report.get("channels", [])),
                          **{k: v for k, v in it.items() if k != "iteration"}}
                         for i, it in enumerate(report["iterations"])])


def read_evaluation(path):
    """The evaluation's outcome: top-1, its images and the per-image outcomes (no confusion matrix)."""
    result = read_json(path)
    keep = ("status", "top1", "test_images", "imgsz", "labels", "predictions", "seed")
    return pd.DataFrame([{k: result[k] for k in keep if k in result}])


READERS = {"pruning": read_prune_report, "eval": read_evaluation}


def source_files(results_root, pattern):
    """[(path, {folder key: folder name or file stem})] of the files a SOURCES entry names."""
    root = Path(results_root)
    keys = re.findall(r"\{(\w+)\}", pattern)
    if not keys:
        return [(root / pattern, {})] if (root / pattern).exists() else []
    regex = re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)))
    files = []
    for path in sorted(root.glob(re.sub(r"\{\w+\}", "*", pattern))):
        match = regex.fullmatch(path.relative_to(root).as_posix())
        if match:
            files.append((path, match.groupdict()))
    return files


def read_sources(results_root=".", sources=SOURCES, instances=None):
    """{name: DataFrame or None (absent)} for every result table. ``instances`` ({model instance: (model,
    seed)}, params.yaml seeds) names the per-model results (eval, pruning) as summary.csv does."""
    tables = {}
    for name, pattern in sources.items():
        frames = []
        for path, folder in source_files(results_root, pattern):
            try:
                frame = READERS[name](path) if name in READERS else pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, KeyError) as err:
                raise UserError(f"{path}: not a readable result table ({str(err).splitlines()[0]})") from None
            frame = frame.assign(**{k: v for k, v in folder.items() if k not in frame.columns})
            if instances and "model" in frame.columns and frame["model"].isin(list(instances)).all():
                frame = frame.assign(model=[instances[m][0] for m in frame["model"]],
                                     seed=[instances[m][1] for m in frame["model"]])
            frames.append(frame)
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


# ----------------------------------------------------------------------------- published values
def to_number(cell):
    """A printed cell as a float: 67.63, "90.03%", "99.1 ms", "302.60 kB"; None when not a number."""
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float, np.integer, np.floating)):
        return None if math.isnan(cell) else float(cell)
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
    """A published cell as a number, an op over two cells, or (``reduce: sum``) a column's sum."""
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
    values = [to_number(r.get(spec["column"])) for r in rows]
    if spec.get("reduce") == "sum" and rows and None not in values:
        return sum(values) * spec.get("scale", 1.0)
    if len(rows) != 1:
        raise UserError(f"mapping: {spec['experiment']} table {spec['table']} has {len(rows)} rows matching "
                        f"{spec.get('where')}, expected 1")
    if values[0] is None:
        raise UserError(f"mapping: {spec['experiment']} table {spec['table']} {spec.get('where')} column "
                        f"{spec['column']!r} is not a number ({rows[0].get(spec['column'])!r})")
    return values[0] * spec.get("scale", 1.0)


# ----------------------------------------------------------------------------- reproduced values
@dataclass
class Reproduced:
    """A reproduced figure per seed (as text; "" when the results have no seed column), in the row's unit."""
    per_seed: dict
    rows: pd.DataFrame                                  # the result rows it comes from (comparability checks)
    accuracy: bool = False                              # derived from top-1 accuracies: it has intervals
    intervals: dict = field(default_factory=dict)       # seed -> 95 % interval
    outcomes: dict = field(default_factory=dict)        # seed -> (labels sha256, per-image outcomes, scale)
    notes: list = field(default_factory=list)

    def summary(self):
        """(value, std, interval or None) over the seeds: the mean, and for accuracies their interval."""
        seeds = sorted(self.per_seed, key=str)
        values = [self.per_seed[s] for s in seeds]
        intervals = [self.intervals[s] for s in seeds if s in self.intervals]
        complete = self.accuracy and len(intervals) == len(seeds)
        mean, std, low, high = seed_interval(values, intervals if complete else None)
        return mean, std, ((low, high) if complete else None)

    def column_values(self, column):
        if column not in self.rows.columns:
            return set()
        return {v for v in self.rows[column] if not (isinstance(v, float) and math.isnan(v)) and v != ""}


def reproduced_value(tables, spec):
    """A :class:`Reproduced` for a mapping spec; raises Missing when absent, Ambiguous when not unique."""
    if "op" in spec:
        return reproduced_op(tables, spec)
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
    scale = spec.get("scale", 1.0)
    size_column = PROPORTIONS.get(column)
    result = Reproduced({}, rows, accuracy=size_column in rows.columns)
    seeds = rows["seed"].astype(str) if "seed" in rows.columns else pd.Series("", index=rows.index)
    for seed, group in rows.groupby(seeds, sort=True):
        values = group[column].map(to_number).dropna()
        if values.empty:
            raise Missing(f"{column} is empty in {SOURCES[source]}")
        if values.nunique() > 1 and "aggregate" not in spec:
            raise Ambiguous(_candidates(group, column, where, source))
        value = AGGREGATES[spec["aggregate"]](values) if values.nunique() > 1 else values.iloc[0]
        result.per_seed[seed] = float(value) * scale
        if result.accuracy and values.nunique() == 1:
            n = int(group[size_column].iloc[0])
            low, high = wilson_interval(round(value * n), n)
            result.intervals[seed] = (low * scale, high * scale)
            outcome = per_image_outcomes(tables.get("eval"), group.iloc[0], value, n)
            if outcome:
                result.outcomes[seed] = (*outcome, scale)
    if result.accuracy and len(result.intervals) < len(result.per_seed):
        result.notes.append(f"no interval: {spec['aggregate']} of several {column} values")
    return result


def _candidates(rows, column, where, source):
    varying = [c for c in IDENTITY if c in rows.columns and rows[c].astype(str).nunique() > 1]
    described = "; ".join(", ".join(f"{c}={r[c]}" for c in varying) + f": {column} {r[column]}"
                          if varying else f"row {i}: {column} {r[column]}" for i, r in rows.head(6).iterrows())
    if len(rows) > 6:
        described += "; ..."
    selection = ", ".join(f"{k}={v}" for k, v in where.items())
    return (f"{len(rows)} rows of {SOURCES[source]} match {selection} with different {column} values "
            f"({described}); add the key that tells them apart to `where`, or `aggregate: "
            f"{'|'.join(AGGREGATES)}`")


def per_image_outcomes(evaluations, row, top1, n):
    """(labels sha256, per-image outcomes) of a summary row from its evaluation result, when recorded."""
    if evaluations is None or "predictions" not in evaluations.columns:
        return None
    keys = [k for k in ("model", "artifact", "seed") if k in row.index and k in evaluations.columns]
    if not {"model", "artifact"} <= set(keys):
        return None
    match = evaluations[np.logical_and.reduce([evaluations[k].astype(str) == str(row[k]) for k in keys])]
    match = match[match["predictions"].notna()]
    if len(match) != 1 or int(match.iloc[0]["test_images"]) != n:
        return None
    classes = per_image_classes(match.iloc[0].to_dict())
    if classes is None:
        return None
    correct = classes[1] == classes[0]
    if abs(correct.mean() - top1) > 0.5 / n:  # not the evaluation the summary row came from
        return None
    return labels_digest(classes[0]), correct


def reproduced_op(tables, spec):
    a, b = reproduced_value(tables, spec["a"]), reproduced_value(tables, spec["b"])
    seeds = [s for s in a.per_seed if s in b.per_seed]
    if not seeds:
        raise Missing("the two values come from different seeds")
    op, scale = OPS[spec["op"]], spec.get("scale", 1.0)
    if spec["op"] != "diff" and any(b.per_seed[s] == 0 for s in seeds):
        raise Missing(f"division by zero in {spec['op']}")
    result = Reproduced({s: op(a.per_seed[s], b.per_seed[s]) * scale for s in seeds},
                        pd.concat([a.rows, b.rows], ignore_index=True), accuracy=a.accuracy and b.accuracy,
                        notes=a.notes + b.notes)
    for s in seeds:
        if s in a.outcomes and s in b.outcomes and a.outcomes[s][0] == b.outcomes[s][0]:
            (_, correct_a, scale_a), (_, correct_b, scale_b) = a.outcomes[s], b.outcomes[s]
            result.intervals[s] = paired_interval(lambda x, y: op(x * scale_a, y * scale_b) * scale,
                                                  correct_a, correct_b)
    if result.accuracy and len(result.intervals) < len(seeds):
        result.notes.append("no interval: the per-image outcomes of both accuracies on the same images are needed "
                            "(evaluation results in results/eval)")
    return result


# ----------------------------------------------------------------------------- scale, comparability, verdicts
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


def mismatched_axes(row, setting, value, scale, mapping):
    """One note per axis the figure depends on where the run differs from the paper (empty: comparable)."""
    notes = []
    for axis in row["depends_on"]:
        if axis == "scale" and scale != "full":
            notes.append(f"scale: the {scale} configuration ran, the figure needs the paper's (full.yaml)")
        elif axis == "hardware":
            devices = sorted(map(str, value.column_values("device")))
            if "emulated" in value.column_values("device_kind"):
                notes.append(f"hardware: measured on an emulated device ({', '.join(devices)})")
            elif not devices or not set(devices) <= set(mapping.get("same_hardware_devices") or []):
                notes.append(f"hardware: measured on {', '.join(devices) or 'an unknown device'}, the paper's is "
                             f"{setting.get('device', mapping['published_hardware'])}")
        elif axis == "model_size":
            counts = sorted(v for v in map(to_number, value.column_values("params")) if v is not None)
            wanted = setting["params"]
            if not counts or any(abs(c - wanted) > MODEL_SIZE_TOLERANCE * wanted for c in counts):
                ran = ", ".join(f"{c:,.0f}" for c in counts) or "no parameter count in the result"
                notes.append(f"model size: {ran} parameters, the paper's model has {wanted:,.0f}")
        elif axis == "input_size":
            sizes = sorted(map(str, value.column_values("imgsz")))
            if sizes != [str(setting["imgsz"])]:
                notes.append(f"input size: {', '.join(sizes) or 'not recorded in the result'}, the paper's is "
                             f"{setting['imgsz']}")
        elif axis == "network":
            notes.append(f"network: {row['note']}")
    return notes


def tolerance_band(tolerance, published):
    """Half-width of the tolerance band around the published value: within if |Δ| ≤ abs or ≤ rel·|published|."""
    return max(tolerance.get("abs", 0.0), tolerance.get("rel", 0.0) * abs(published))


def tolerance_flag(row, published):
    """For a figure that is an effect (a difference, change or ratio of two published values): a warning
    when the tolerance is at least the effect itself, so that no effect at all would pass."""
    op = row["published"].get("op")
    if op is None:
        return ""
    effect, band = published - NO_EFFECT[op], tolerance_band(row["tolerance"], published)
    if band < abs(effect):
        return ""
    unit = "pp" if row["unit"] in ("%", "pp") else row["unit"]
    return (f"the tolerance (±{band:.3g} {unit}) is not narrower than the published effect ({effect:+.3g} {unit} "
            f"from {NO_EFFECT[op]:g}): a run with no effect would pass")


def verdict(row, published, value, interval, accuracy):
    """(verdict, note) of a comparable figure. An accuracy (or a function of two) is within only when all of
    its 95 % interval lies inside the tolerance band, differs only when all of it lies outside, and is
    inconclusive otherwise, or when it has no interval; any other figure is judged by its value."""
    band = tolerance_band(row["tolerance"], published)
    low_ok, high_ok = published - band, published + band
    if accuracy and interval is None:
        return INCONCLUSIVE, "an accuracy without a 95 % interval"
    if interval is None:
        return (WITHIN if abs(value - published) <= band else DIFFERS), ""
    low, high = interval
    if low_ok <= low and high <= high_ok:
        return WITHIN, ""
    if high < low_ok or low > high_ok:
        return DIFFERS, ""
    return INCONCLUSIVE, (f"the 95 % interval [{_fmt(low)}, {_fmt(high)}] reaches across the tolerance band "
                          f"[{_fmt(low_ok)}, {_fmt(high_ok)}]")


def build_table(paper, params, tables, root=PAPERS_DIR):
    reference, mapping, overlays = load_paper(paper, root)
    scale = detect_scale(params, overlays)
    out = []
    for table in mapping["tables"]:
        for row in expand_rows(table["rows"]):
            setting = resolved_setting(reference, paper_setting(mapping, table, row))
            try:
                out.append(build_row(table, row, setting, reference, tables, scale, mapping))
            except Ambiguous as ambiguous:
                raise UserError(f"{Path(root) / paper / 'mapping.yaml'}: table {table['id']}, row "
                                f"'{row['metric']}': {ambiguous}") from None
    return mapping, scale, pd.DataFrame(out)


def resolved_setting(reference, setting):
    """paper_setting with a published cell (e.g. params from a file size) read from the reference."""
    return {k: published_value(reference, v) if isinstance(v, dict) else v for k, v in setting.items()}


def build_row(table, row, setting, reference, tables, scale, mapping):
    """One line of the table: the published value, the reproduced one, its interval and the verdict."""
    published = published_value(reference, row["published"])
    flag = tolerance_flag(row, published)
    entry = {"table": table["id"], "metric": row["metric"], "unit": row["unit"], "published": published,
             "reproduced": None, "ci_low": None, "ci_high": None, "std": None, "per_seed": "", "delta_abs": None,
             "delta_rel_pct": None, "tolerance": _describe_tolerance(row["tolerance"], row["unit"]),
             "verdict": NOT_RUN, "flag": flag, "note": ""}
    try:
        value = reproduced_value(tables, row["reproduced"])
    except Missing as missing:
        entry["note"] = f"{row['needs']}: {missing}"
        return entry
    mean, std, interval = value.summary()
    entry.update(reproduced=mean, std=std, delta_abs=mean - published,
                 delta_rel_pct=100.0 * (mean - published) / abs(published) if published else None)
    if len(value.per_seed) > 1:
        entry["per_seed"] = "; ".join(f"{s}: {v:.4g}" for s, v in sorted(value.per_seed.items(),
                                                                           key=lambda kv: (len(kv[0]), kv[0])))
    if interval:
        entry["ci_low"], entry["ci_high"] = interval
    mismatches = mismatched_axes(row, setting, value, scale, mapping)
    if mismatches:
        entry["verdict"], why = NOT_COMPARABLE, "; ".join(mismatches)
    else:
        entry["verdict"], why = verdict(row, published, mean, interval, value.accuracy)
    extra = row.get("note", "") if "network" not in row["depends_on"] else ""
    entry["note"] = "; ".join(n for n in (why, *value.notes, extra) if n)
    return entry


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


def _present(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def reproduced_cell(r):
    """"42.1 [39.0, 45.2]"; with several seeds "42.1 ± 0.35 [38.9, 45.3] (seeds 0: 42.1; 1: 41.8; ...)"."""
    if not _present(r.reproduced):
        return "–"
    text = _fmt(r.reproduced)
    if _present(r.std):
        text += f" ± {r.std:.2g}"
    if _present(r.ci_low):
        text += f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
    if r.per_seed:
        text += f" (seeds {r.per_seed})"
    return text


def describe_setting(setting):
    parts = []
    for key, value in setting.items():
        if key == "params":
            parts.append(f"{value / 1e6:.3g} M parameters")
        elif key == "imgsz":
            parts.append(f"{value} input")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def to_markdown(paper, mapping, scale, rows, tables, reference):
    lines = [f"# {mapping['title']}", "",
             f"Paper `{paper}`; published on: {mapping['published_hardware']}.",
             f"Configuration of these results: **{scale}** (`config/papers/{paper}/small.yaml` / `full.yaml`).",
             "Regenerate: `snakemake --cores 8 results/papers/" + paper + "/table.md`.", "",
             "Sources: " + ", ".join(f"`{SOURCES[n]}` ({'present' if t is not None else 'absent'})"
                                     for n, t in tables.items()), "",
             "Verdicts: *within tolerance* / *differs* (comparable; for an accuracy, all of its 95 % interval "
             "inside / outside the tolerance band) / *inconclusive at this scale* (the interval reaches across the "
             "band: the test set is too small to tell) / *not comparable* (the figure depends on an axis — scale, "
             "hardware, model size, input size, network — on which the run differs from the paper; the note "
             "says which) / *not run* (the pipeline part that produces it has no result yet). Reproduced: value "
             "[95 % interval: Wilson for one accuracy, paired bootstrap over the same test images for two]; with "
             "several seeds the mean ± std and the per-seed values. Δ = reproduced − published; Δ rel = "
             "Δ / |published|. ⚠: the tolerance is not narrower than the published effect it tests.", ""]
    counts = rows["verdict"].value_counts()
    lines += ["Summary: " + ", ".join(f"{v}: {int(counts.get(v, 0))}" for v in VERDICTS), ""]
    for table in mapping["tables"]:
        part = rows[rows["table"] == table["id"]]
        lines += [f"## {table['caption']}", ""]
        if table.get("description"):
            lines += [table["description"].strip(), ""]
        setting = resolved_setting(reference, paper_setting(mapping, table, {}))
        if setting:
            lines += [f"The paper ran: {describe_setting(setting)}.", ""]
        lines += ["| metric | unit | published | reproduced | Δ | Δ rel | tolerance | verdict | note |",
                  "|---|---|---:|---:|---:|---:|---|---|---|"]
        for r in part.itertuples():
            rel = "–" if not _present(r.delta_rel_pct) else f"{r.delta_rel_pct:+.1f} %"
            delta = "–" if not _present(r.delta_abs) else f"{r.delta_abs:+.4g}"
            tolerance = r.tolerance + (" ⚠" if r.flag else "")
            note = "; ".join(n for n in (r.note, f"⚠ {r.flag}" if r.flag else "") if n)
            lines.append(f"| {r.metric} | {r.unit} | {_fmt(r.published)} | {reproduced_cell(r)} | {delta} | "
                         f"{rel} | {tolerance} | {r.verdict} | {note.replace('|', '/')} |")
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
                r"Metric & Unit & Published & Reproduced [95\% CI] & $\Delta$ & $\Delta$ rel. & Verdict \\", r"\hline"]
        for r in part.itertuples():
            rel = "--" if not _present(r.delta_rel_pct) else f"{r.delta_rel_pct:+.1f}\\%"
            delta = "--" if not _present(r.delta_abs) else f"{r.delta_abs:+.4g}"
            out.append(f"{_tex_escape(r.metric)} & {_tex_escape(r.unit)} & {_tex_escape(_fmt(r.published))} & "
                       f"{_tex_escape(reproduced_cell(r))} & {delta} & {rel} & {_tex_escape(r.verdict)} \\\\")
        out += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def verdict_metrics(paper, scale, rows):
    counts = rows["verdict"].value_counts()

    def number(value):
        return float(value) if _present(value) else None

    return {"paper": paper, "scale": scale,
            "verdicts": {v.replace(" ", "_"): int(counts.get(v, 0)) for v in VERDICTS},
            "rows": {f"{r.table}/{r.metric}": {"published": r.published, "reproduced": number(r.reproduced),
                                                "ci_low": number(r.ci_low), "ci_high": number(r.ci_high),
                                                "verdict": r.verdict, "tolerance_wider_than_effect": bool(r.flag)}
                     for r in rows.itertuples()}}


def write_paper(paper, params, out, results_root=".", root=PAPERS_DIR):
    tables = read_sources(results_root, instances={m: (base_model(params, m), model_seed(params, m))
                                                   for m in params["models"]})
    reference, _, _ = load_paper(paper, root)
    mapping, scale, rows = build_table(paper, params, tables, root)
    out = Path(out)
    with atomic_path(out / "table.csv") as tmp:
        rows.to_csv(tmp, index=False, float_format="%.6g")
    write_text(out / "table.tex", to_latex(paper, mapping, rows))
    write_json(out / "verdicts.json", verdict_metrics(paper, scale, rows))
    write_text(out / "table.md", to_markdown(paper, mapping, scale, rows, tables, reference))  # last: completion
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
