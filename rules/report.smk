# per-case QC -> results/cohort/report.html (snapshots, flagged cases) + report_qc.parquet/.csv (cohort QC table).


rule report:
    input:
        expand(case_file(RESULTS, "qc"), case=sorted(SAMPLES)),
    output:
        html=out("report"),
        table=out("report", "report_qc.parquet"),
        csv=out("report", "report_qc.csv"),
    log:
        cohort_out("logs/report.log"),
    benchmark:
        cohort_out("benchmarks/report.tsv")
    params:
        results=results_of,
        config=stage_config("report"),
    threads: res("report").threads
    resources:
        mem_mb=res("report").mem_mb,
        runtime=res("report").runtime_min,
    conda:
        conda_env("report")
    shell:
        "python -m ctsam report {params.results} -o {output.html} --config {params.config} 2> {log}"
