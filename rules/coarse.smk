# CT -> results/<case>/coarse.nii.gz (+ .tsv label table, .json sidecar): first masks from the
# user's label map (backend 'labels') or TotalSegmentator, in TotalSegmentator 'total' ids.


rule coarse:
    input:
        ct=out("convert"),
        labels=get_coarse_labels,
    output:
        coarse=out("coarse"),
        table=case_out("coarse.tsv"),
        sidecar=case_out("coarse.json"),
    log:
        log_path("coarse"),
    benchmark:
        bench_path("coarse")
    params:
        backend=WF["coarse_backend"],
        labels_arg=coarse_labels_arg,
        config=stage_config("coarse"),
    threads: 1 if WF["coarse_backend"] == "labels" else 4
    resources:
        mem_mb=4000 if WF["coarse_backend"] == "labels" else 16000,
        runtime=20 if WF["coarse_backend"] == "labels" else 120,
        # TotalSegmentator on a GPU holds one GPU (see rules/common.smk)
        gpu=GPU_RESOURCE if coarse_uses_gpu() else 0,
    conda:
        "../envs/ctsam.yaml" if WF["coarse_backend"] == "labels" else "../envs/totalsegmentator.yaml"
    shell:
        "python -m ctsam coarse {input.ct} -o {output.coarse} --sidecar {output.sidecar}"
        " --backend {params.backend} {params.labels_arg}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
