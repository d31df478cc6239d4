# CT -> results/<case>/coarse.nii.gz (+ .tsv label table, .json sidecar): first masks from the
# user's label map or TotalSegmentator, in TotalSegmentator 'total' ids. The backend is chosen per case
# (coarse.backend; 'auto' = labels when the case has them), so are threads, memory and conda env.


rule coarse:
    input:
        ct=out("convert"),
        labels=get_coarse_labels,
    output:
        coarse=out("coarse"),
        table=out("coarse", "coarse.tsv"),
        sidecar=out("coarse", "coarse.json"),
    log:
        log_path("coarse"),
    benchmark:
        bench_path("coarse")
    params:
        backend=coarse_backend,
        labels_arg=coarse_labels_arg,
        config=stage_config("coarse"),
    threads: coarse_threads
    resources:
        mem_mb=coarse_mem_mb,
        runtime=coarse_runtime,
        # TotalSegmentator on a GPU holds one GPU (see rules/common.smk)
        gpu=coarse_gpu,
    conda:
        coarse_env
    shell:
        "python -m ctsam coarse {input.ct} -o {output.coarse} --sidecar {output.sidecar}"
        " --backend {params.backend} {params.labels_arg}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
