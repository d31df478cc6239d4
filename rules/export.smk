# Optional DICOM exports of each case's final label map (config `export`, off by default; DICOM inputs only):
# results/<case>/seg.dcm (DICOM-SEG) and results/<case>/rtstruct.dcm (RTSTRUCT), referencing the source
# series, with the source identity copied or removed (export.identity; docs/export.md).


rule export:
    input:
        labels=out("fuse"),
        study=get_study,
    output:
        dcm=out("export", "{format}.dcm"),
    log:
        case_out("logs/export_{format}.log"),
    benchmark:
        case_out("benchmarks/export_{format}.tsv")
    wildcard_constraints:
        format="seg|rtstruct",
    params:
        study=study_path,
        config=stage_config("export"),
    threads: res("export").threads
    resources:
        mem_mb=res("export").mem_mb,
        runtime=res("export").runtime_min,
    conda:
        conda_env("export")
    shell:
        "python -m ctsam export-seg {input.labels} {params.study:q} --format {wildcards.format} -o {output.dcm}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
