# coarse labels + refined probabilities -> results/<case>/labels.nii.gz (one label map, 107 structures).


rule fuse:
    input:
        coarse=out("coarse"),
        refined=out("refine"),
    output:
        labels=out("fuse"),
    log:
        log_path("fuse"),
    benchmark:
        bench_path("fuse")
    params:
        config=stage_config("fuse"),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=20,
    conda:
        "../envs/ctsam.yaml"
    shell:
        "python -m ctsam fuse {input.coarse} {input.refined} -o {output.labels}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
