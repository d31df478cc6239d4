# CT + one click per lesion -> results/<case>/lesions.nii.gz (value = lesion id, .tsv label table) and
# lesions.json (per-lesion volume, RECIST diameters, centroid, probabilities, containing structure).
# Optional (config lesions.enabled). A GPU stage (resources gpu=1, see rules/common.smk): the SLURM profile puts it in the group of refine, so a
# case's lesions run inside its existing GPU job. refined.npz is an input only to order lesions after
# refine in that job (Snakemake joins jobs of a group that depend on each other; the two then never share
# the GPU at once); 'ctsam lesions' does not read it.


rule lesions:
    input:
        ct=out("convert"),
        clicks=get_lesion_clicks,
        labels=get_lesion_labels,
        checkpoint=list(LESION_MODEL_FILES.values()),
        after=get_refined,
    output:
        lesions=out("lesions"),
        sidecar=out("lesions", "lesions.json"),
    log:
        log_path("lesions"),
    benchmark:
        bench_path("lesions")
    params:
        config=stage_config("lesions"),
        clicks=lesion_clicks_arg,
        labels=lesion_labels_arg,
        checkpoints=lesion_checkpoint_args,
    threads: res("lesions").threads
    resources:
        mem_mb=res("lesions").mem_mb,
        runtime=res("lesions").runtime_min,
        gpu=GPU_RESOURCE,  # one GPU per job: the local profile serialises, SLURM maps it to --gres
    conda:
        conda_env("lesions")
    shell:
        "python -m ctsam lesions {input.ct} {params.clicks} -o {output.lesions} {params.labels}"
        " {params.checkpoints} --case {wildcards.case} --config {params.config} 2> {log}"
