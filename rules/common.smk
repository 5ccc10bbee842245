# Functions of the Snakefile (Snakemake's linter wants functions apart from rules).
import re
from pathlib import Path

from workflow.sync import record

PLOT_CAPTIONS = {"pareto": "Pareto front", "bubble": "Bubble chart", "yuv_gain_vs_area": "YUV gain",
                 "latency_distribution": "Latency distribution", "first_run_ratio": "First run"}


def default_targets():
    """The summary, every paper table and the plots; the detection summary when detection.enabled."""
    return [s.outs[0] for s in PLAN.stages if s.rule.name in ("aggregate", "paper_table", "det_aggregate")] + \
        [f for s in PLAN.stages if s.rule.name == "plots" for f in s.outs]


def output(path, directories):
    """A rule's output as Snakemake declares it: folders, and what goes into the HTML report."""
    if path in directories:
        return directory(path)
    if path == layout.SUMMARY:
        return report(path, category="Summary", caption="../workflow/report/summary.rst")
    if path == f"{layout.paper_dir('{paper}')}/table.csv":
        return report(path, category="Paper tables", subcategory="{paper}",
                      caption="../workflow/report/paper_table.rst", labels={"paper": "{paper}"})
    if path.startswith(layout.PLOTS_DIR) and path.endswith(".png"):
        kind = Path(path).stem.split("-")[0]
        return report(path, category="Plots", subcategory=PLOT_CAPTIONS[kind],
                      caption=f"../workflow/report/plot_{kind}.rst")
    return path


def rule_outputs(rule):
    patterns = rule.patterns(P)
    return [output(path, patterns.dirs) for path in patterns.files]


def wildcard_constraints_of(rule):
    """Each wildcard matches exactly the values the rule's stages take (no other file is claimed)."""
    return {w: "|".join(re.escape(v) for v in values) for w, values in PLAN.values(rule).items()}


def job_resources(rule):
    """{resource: function of the job's wildcards} over every resource the rule's stages ask for."""
    names = {name for s in PLAN.stages if s.rule is rule for name in s.resources}
    return {name: (lambda wc, rule=rule, name=name: PLAN.job(rule.name, wc).resources.get(name, 0))
            for name in sorted(names)}


def record_in_dvc(workflow):
    """When a run ends (done or failed): DVC records the stages whose jobs are complete: finished in
    this run, or up to date with Snakemake's metadata. Not after --touch (workflow.sync)."""
    if workflow.touch:
        return
    dag, persistence = workflow.dag, workflow.persistence
    jobs = [job for job in dag.jobs if job.rule.name in PLAN.rule]
    name = lambda job: PLAN.job(job.rule.name, job.wildcards_dict).name
    record(P, [name(job) for job in jobs if dag.finished(job)],
           [name(job) for job in jobs if not dag.needrun(job) and persistence.has_metadata(job)])
