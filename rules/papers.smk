from workflow.dag import produced_sources
from workflow.papers import PAPERS, PAPERS_DIR

# The optional result tables (pre-processing pipeline, pruning reports, detection) that a
# stage of this DAG produces; a paper table depends on them once their stages exist.
PAPER_SOURCES = [f for files in produced_sources(DAG_STAGES).values() for f in files]


wildcard_constraints:
    paper="|".join(PAPERS),


rule paper_table:
    """A paper's tables: each published figure beside the reproduced one, Δ and a verdict."""
    output:
        "results/papers/{paper}/table.md",
        report("results/papers/{paper}/table.csv", category="Paper tables", subcategory="{paper}",
               caption="../workflow/report/paper_table.rst", labels={"paper": "{paper}"}),
        "results/papers/{paper}/table.tex",
        "results/papers/{paper}/verdicts.json",
    input:
        "results/summary.csv",
        PAPER_SOURCES,
        "params.yaml",
        f"{PAPERS_DIR}/{{paper}}.yaml",
        expand(f"{PAPERS_DIR}/{{{{paper}}}}/{{name}}.yaml", name=["mapping", "small", "full"]),
        "workflow/papers.py",
        "workflow/accuracy.py",
    log:
        "logs/paper_table/{paper}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow.papers --paper {wildcards.paper} --params params.yaml "
        "--out results/papers/{wildcards.paper} > {log} 2>&1"
