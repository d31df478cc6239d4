# coarse labels (+ refined probabilities when refine runs) -> results/<case>/labels.nii.gz
# (one 107-structure label map, .tsv label table) and fuse.json (each structure's source).


rule fuse:
    input:
        coarse=out("coarse"),
        refined=get_refined,
    output:
        labels=out("fuse"),
        table=case_out("labels.tsv"),
        sidecar=case_out("fuse.json"),
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
        "python -m ctsam fuse {input.coarse} {input.refined} -o {output.labels} --sidecar {output.sidecar}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
