# CT + final labels -> results/<case>/radiomics.parquet; cohort table results/cohort/radiomics.parquet.


rule radiomics:
    input:
        ct=out("convert"),
        labels=out("fuse"),
        lesions=get_lesions,
    output:
        features=out("radiomics"),
    log:
        log_path("radiomics"),
    benchmark:
        bench_path("radiomics")
    params:
        config=stage_config("radiomics"),
        lesions=lesions_arg,
    threads: res("radiomics").threads
    resources:
        mem_mb=res("radiomics").mem_mb,
        runtime=res("radiomics").runtime_min,
    conda:
        conda_env("radiomics")
    shell:
        "python -m ctsam radiomics {input.ct} {input.labels} {params.lesions} -o {output.features} --workers {threads}"
        " --case {wildcards.case} --config {params.config} 2> {log}"


rule radiomics_cohort:
    input:
        expand(case_file(RESULTS, "radiomics"), case=sorted(SAMPLES)),
    output:
        out("radiomics_cohort"),
    log:
        cohort_out("logs/radiomics_cohort.log"),
    benchmark:
        cohort_out("benchmarks/radiomics_cohort.tsv")
    params:
        config=stage_config("radiomics_cohort"),
    threads: res("radiomics_cohort").threads
    resources:
        mem_mb=res("radiomics_cohort").mem_mb,
        runtime=res("radiomics_cohort").runtime_min,
    conda:
        conda_env("radiomics_cohort")
    shell:
        "python -m ctsam radiomics-cohort {input} -o {output} --config {params.config} 2> {log}"
