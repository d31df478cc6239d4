# Every per-case output -> results/<case>/manifest.json: input and output hashes, software versions,
# checkpoint sha256, config digest and per-stage timings (every results/<case>/benchmarks/<stage>.tsv the
# case's stage jobs wrote before this one runs: wall time, max RSS, CPU time per stage).


rule manifest:
    input:
        outputs=manifest_inputs,
        study=get_study,
        checkpoint=([refine_checkpoint()] if "refine" in STAGES else []) + sorted(set(LESION_MODEL_FILES.values())),
    output:
        manifest=out("manifest"),
    log:
        log_path("manifest"),
    params:
        case_dir=lambda wildcards: f"{RESULTS}/{wildcards.case}",
        files=manifest_args,
        config=stage_config("manifest"),
    threads: res("manifest").threads
    resources:
        mem_mb=res("manifest").mem_mb,
        runtime=res("manifest").runtime_min,
    conda:
        conda_env("manifest")
    shell:
        "python -m ctsam manifest {params.case_dir} {params.files} --benchmarks-dir {params.case_dir}/benchmarks"
        " -o {output.manifest}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
