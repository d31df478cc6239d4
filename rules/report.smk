# per-case QC -> results/cohort/report.html (snapshots, flagged cases) + report_qc.parquet/.csv (cohort QC table).


rule report:
    input:
        expand(case_file(RESULTS, "qc"), case=sorted(SAMPLES)),
    output:
        html=cohort_out("report.html"),
        table=cohort_out("report_qc.parquet"),
        csv=cohort_out("report_qc.csv"),
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
        "python -m ctsam report {params.results} -o {output.html} --config {params.config} 2> {log}"
