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
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=GPU_RESOURCE,  # one GPU per job: the local profile serialises, SLURM maps it to --gres
    conda:
        "../envs/ctsam.yaml"
    shell:
        "python -m ctsam refine {input.ct} {input.prompts} -o {output.refined} --coarse {input.coarse}"
        " --checkpoint {input.checkpoint} {params.extra_clicks}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
