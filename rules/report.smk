# per-case QC -> results/cohort/report.html (cohort QC table, snapshots, flagged cases).


rule report:
    input:
        expand(case_file(RESULTS, "qc"), case=sorted(SAMPLES)),
    output:
        cohort_out("report.html"),
    log:
        cohort_out("logs/report.log"),
    benchmark:
        cohort_out("benchmarks/report.tsv")
    params:
        results=results_of,
        config=stage_config("report"),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/ctsam.yaml"
    shell:
        "python -m ctsam report {params.results} -o {output} --config {params.config} 2> {log}"
