# CT + prompts -> per-structure refined probabilities (the GPU stage: resources gpu=1, see rules/common.smk).


rule refine:
    input:
        ct=out("convert"),
        prompts=out("seed"),
        coarse=out("coarse"),
        checkpoint=refine_checkpoint(),
        corrections=get_corrections,
    output:
        refined=out("refine"),
    log:
        log_path("refine"),
    benchmark:
        bench_path("refine")
    params:
        config=stage_config("refine"),
        extra_clicks=corrections_arg,
    threads: res("refine").threads
    resources:
        mem_mb=res("refine").mem_mb,
        runtime=res("refine").runtime_min,
        gpu=GPU_RESOURCE,  # one GPU per job: the local profile serialises, SLURM maps it to --gres
    conda:
        conda_env("refine")
    shell:
        "python -m ctsam refine {input.ct} {input.prompts} -o {output.refined} --coarse {input.coarse}"
        " --checkpoint {input.checkpoint} {params.extra_clicks}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
