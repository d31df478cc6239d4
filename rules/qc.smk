# CT + final labels (+ coarse) -> results/<case>/qc.json: per-structure metrics and flags.


rule qc:
    input:
        ct=out("convert"),
        labels=out("fuse"),
        coarse=out("coarse"),
    output:
        qc=out("qc"),
    log:
        log_path("qc"),
    benchmark:
        bench_path("qc")
    params:
        config=stage_config("qc"),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=20,
    conda:
        "../envs/ctsam.yaml"
    shell:
        "python -m ctsam qc {input.ct} {input.labels} --coarse {input.coarse} -o {output.qc}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
