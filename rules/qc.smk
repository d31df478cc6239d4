# CT + final labels (+ coarse, fusion sidecar, refined) -> results/<case>/qc.json: metrics and flags.


rule qc:
    input:
        ct=out("convert"),
        labels=out("fuse"),
        coarse=out("coarse"),
        fuse_sidecar=out("fuse", "fuse.json"),
        lesions=get_lesions,
    output:
        qc=out("qc"),
    log:
        log_path("qc"),
    benchmark:
        bench_path("qc")
    params:
        refined_arg=refined_arg,
        lesions=lesions_arg,
        config=stage_config("qc"),
    threads: res("qc").threads
    resources:
        mem_mb=res("qc").mem_mb,
        runtime=res("qc").runtime_min,
    conda:
        conda_env("qc")
    shell:
        "python -m ctsam qc {input.ct} {input.labels} --coarse {input.coarse} --fuse-sidecar {input.fuse_sidecar}"
        " {params.refined_arg} {params.lesions} -o {output.qc} --case {wildcards.case} --config {params.config} 2> {log}"
