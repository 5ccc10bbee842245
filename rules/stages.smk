# One rule per stage family of workflow/dag.py. Outputs are the family's output patterns; input,
# params (the values of the params.yaml keys the stage reads, as DVC tracks them), threads,
# resources and the command are those of the stage the job's wildcards name.
for R in PLAN.rules:

    rule:
        name:
            R.name
        output:
            *rule_outputs(R),
        input:
            lambda wc, R=R: PLAN.job(R.name, wc).deps,
        params:
            values=lambda wc, R=R: PLAN.param_values(PLAN.job(R.name, wc)),
            cmd=lambda wc, R=R: PLAN.job(R.name, wc).cmd,
        threads: lambda wc, R=R: PLAN.job(R.name, wc).threads
        resources:
            **job_resources(R),
        wildcard_constraints:
            **wildcard_constraints_of(R),
        log:
            R.log,
        conda:
            f"../envs/{R.env}.yaml"
        shell:
            "{params.cmd} > {log} 2>&1"

    workflow.get_rule(R.name).docstring = R.doc  # what `snakemake --list-rules` says about the rule
