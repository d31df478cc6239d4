# CT -> results/<case>/coarse.nii.gz: first masks from the user's label map or TotalSegmentator.


rule coarse:
    input:
        ct=out("convert"),
        labels=get_coarse_labels,
    output:
        coarse=out("coarse"),
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
    conda:
        "../envs/ctsam.yaml" if WF["coarse_backend"] == "labels" else "../envs/totalsegmentator.yaml"
    shell:
        "python -m ctsam coarse {input.ct} -o {output.coarse} --backend {params.backend}"
        " {params.labels_arg}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
