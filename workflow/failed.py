"""The results of the current DAG that record ``status: failed``, to rerun just those once the cause is fixed.

    ./run.sh --retry-failed              # = snakemake --forcerun $(python -m workflow.failed)
    dvc repro --force --single-item $(python -m workflow.failed --dvc) && dvc repro

A benchmark on a device that was unreachable, a conversion that failed, a runtime that was
missing: each such job still writes its result (a row with status failed and the reason),
so Snakemake and DVC consider it done. This lists, for every stage of params.yaml's DAG, the
first JSON output that records a failure (or cannot be read), as Snakemake targets (default)
or DVC stage names (``--dvc``), one per line on stdout, with the reasons on stderr. Forcing
those jobs reruns them and everything downstream (evaluation, summary, tables); the ones
that succeeded are not touched. Results left from an older params.yaml are not listed
(they are not part of the DAG).
"""
import argparse
import json
import sys
from pathlib import Path

from workflow.config import load_params
from workflow.dag import stages
from workflow.errors import cli


def failure_of(path):
    """The reason a result file records for failing, or None when it succeeded."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__})"
    if isinstance(doc, dict) and doc.get("status") == "failed":
        return str(doc.get("reason") or "no reason recorded")
    return None


def failed_jobs(params):
    """[(stage name, output file, reason)] for every stage with a failed JSON output on disk."""
    failed = []
    for stage in stages(params):
        for output in [*stage.outs, *stage.metrics]:
            if output.endswith(".json") and Path(output).is_file():
                reason = failure_of(output)
                if reason is not None:
                    failed.append((stage.name, output, reason))
                    break
    return failed


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dvc", action="store_true", help="print DVC stage names instead of Snakemake targets")
    args = parser.parse_args(argv)
    failed = failed_jobs(load_params(args.params))
    for name, output, reason in failed:
        print(name if args.dvc else output)
        print(f"failed: {output}: {reason[:200]}", file=sys.stderr)
    if not failed:
        print("no failed results in the current DAG", file=sys.stderr)


if __name__ == "__main__":
    main()
