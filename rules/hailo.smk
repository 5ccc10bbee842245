# The Hailo Dataflow Compiler flow, only for artifacts with a `hailo:` entry and `hef` in targets.
# Without the (proprietary) SDK each step stops with one line saying what to install.
rule hailo_translate:
    """Translate the fp32 ONNX model to a Hailo archive (.har) for one hw_arch."""
    output:
        har="results/hailo/{model}/{artifact}-parsed.har",
        report="results/hailo/{model}/{artifact}-parsed.json",
    input:
        model="results/artifacts/{model}/onnx-fp32.onnx",
        code="workflow/hailo.py",
    wildcard_constraints:
        artifact="|".join(artifacts_by_producer(P, "hailo")) or "^$",
    params:
        options=hailo_options("translate"),
    log:
        "logs/hailo/{model}/{artifact}-translate.log",
    conda:
        "../envs/hailo.yaml"
    shell:
        "python -m workflow.hailo translate --params params.yaml --model {input.model}{params.options} "
        "--out {output.har} > {log} 2>&1"


rule hailo_optimize:
    """Quantize the archive with the packed calibration split (NHWC) and the generated model script."""
    output:
        har="results/hailo/{model}/{artifact}-quantized.har",
        report="results/hailo/{model}/{artifact}-quantized.json",
        script="results/hailo/{model}/{artifact}-quantized.alls",
    input:
        har="results/hailo/{model}/{artifact}-parsed.har",
        calib=packed("calib.npy"),
        manifest=packed("manifest.json"),
        code="workflow/hailo.py",
    wildcard_constraints:
        artifact="|".join(artifacts_by_producer(P, "hailo")) or "^$",
    params:
        options=hailo_options("optimize"),
        settings=lambda wc: P["artifacts"][wc.artifact],
    log:
        "logs/hailo/{model}/{artifact}-optimize.log",
    conda:
        "../envs/hailo.yaml"
    shell:
        "python -m workflow.hailo optimize --params params.yaml --har {input.har}{params.options} "
        "--calib {input.calib} --manifest {input.manifest} --out {output.har} > {log} 2>&1"


rule hailo_compile:
    """Compile the quantized archive to a .hef for the Hailo device."""
    output:
        hef="results/artifacts/{model}/{artifact}.hef",
        report="results/artifacts/{model}/{artifact}.json",
    input:
        har="results/hailo/{model}/{artifact}-quantized.har",
        code="workflow/hailo.py",
    wildcard_constraints:
        artifact="|".join(artifacts_by_producer(P, "hailo")) or "^$",
    params:
        options=hailo_options("compile"),
    log:
        "logs/hailo/{model}/{artifact}-compile.log",
    conda:
        "../envs/hailo.yaml"
    shell:
        "python -m workflow.hailo compile --params params.yaml --har {input.har}{params.options} --out {output.hef}"
        " > {log} 2>&1"
