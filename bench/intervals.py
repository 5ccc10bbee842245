"""Cost and width of the paper tables' 95 % intervals (workflow/accuracy.py) by test-set size.

    .venv/bin/python bench/intervals.py      # -> bench/results/intervals.json

For two models that agree on all but 4 % of the images (a typical int8 vs fp32 pair) at 43 % top-1,
the difference of their accuracies: the paired bootstrap the tables use (the four outcome-pair shares
drawn from Dirichlet(counts + 1/2), 9999 resamples), the ordinary bootstrap over the images by
scipy.stats.bootstrap (percentile, and its default BCa, whose jackknife grows with n^2), and the
widths of the Wilson interval of one accuracy and of an interval that ignores the pairing (two
independent Wilson intervals combined by Newcombe's method). The pairing is what makes a
1000-image test set able to tell a 1 pp drop from none.
"""
import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
from scipy.stats import bootstrap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.accuracy import N_RESAMPLES, paired_interval, wilson_interval  # noqa: E402
from workflow.io import write_json  # noqa: E402

OUT = ROOT / "bench" / "results" / "intervals.json"
SIZES = (1000, 10000, 50000)
SCIPY_MAX = 10000  # scipy's resampling of the images themselves takes minutes above this


def outcomes(n, rng):
    a = rng.random(n) < 0.43
    b = a.copy()
    flipped = rng.random(n) < 0.04
    b[flipped] = ~b[flipped]
    return a, b


def diff_pp(x, y):
    return 100 * (x - y)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def newcombe_independent(a, b):
    """The difference's interval if the two accuracies came from different images (Newcombe 1998, method 10)."""
    (la, ha), (lb, hb) = wilson_interval(a.sum(), len(a)), wilson_interval(b.sum(), len(b))
    d = a.mean() - b.mean()
    return (100 * (d - math.hypot(a.mean() - la, hb - b.mean())), 100 * (d + math.hypot(ha - a.mean(), b.mean() - lb)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine-note", default="measured on a 2-core machine shared with other jobs; times are upper "
                                                  "bounds", help="how busy the machine was (recorded as machine_note)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    paired_interval(diff_pp, *outcomes(100, rng))  # imports scipy's bootstrap before timing
    for n in SIZES:
        a, b = outcomes(n, rng)
        (low, high), seconds = timed(lambda: paired_interval(diff_pp, a, b))
        row = {"test_images": n, "difference_pp": diff_pp(a.mean(), b.mean()),
               "paired_dirichlet": {"interval_pp": [low, high], "width_pp": high - low, "seconds": seconds},
               "independent_newcombe_width_pp": float(np.subtract(*newcombe_independent(a, b)[::-1])),
               "wilson_one_accuracy_width_pp": 100 * float(np.subtract(*wilson_interval(a.sum(), n)[::-1]))}
        if n <= SCIPY_MAX:
            for method in ("percentile", "BCa"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result, seconds = timed(lambda: bootstrap(
                        (a.astype(float), b.astype(float)),
                        lambda x, y, axis: diff_pp(x.mean(axis=axis), y.mean(axis=axis)), paired=True,
                        vectorized=True, n_resamples=N_RESAMPLES, batch=500, method=method,
                        rng=np.random.default_rng(0)))
                ci = result.confidence_interval
                row[f"scipy_{method.lower()}"] = {"interval_pp": [ci.low, ci.high], "width_pp": ci.high - ci.low,
                                                  "seconds": seconds}
        rows.append(row)
        print(json.dumps(row))
    result = {"what": __doc__.split("\n\n")[2].replace("\n", " "), "rows": rows,
              "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "scipy": scipy.__version__},
              "machine_note": args.machine_note}
    write_json(OUT, result)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
