# coarse labels (+ refined probabilities when refine runs) -> results/<case>/labels.nii.gz
# (one 107-structure label map, .tsv label table) and fuse.json (each structure's source).


rule fuse:
    input:
        coarse=out("coarse"),
        refined=get_refined,
    output:
        labels=out("fuse"),
        table=out("fuse", "labels.tsv"),
        sidecar=out("fuse", "fuse.json"),
    log:
        log_path("fuse"),
    benchmark:
        bench_path("fuse")
    params:
        config=stage_config("fuse"),
    threads: res("fuse").threads
    resources:
        mem_mb=res("fuse").mem_mb,
        runtime=res("fuse").runtime_min,
    conda:
        conda_env("fuse")
    shell:
        "python -m ctsam fuse {input.coarse} {input.refined} -o {output.labels} --sidecar {output.sidecar}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
