# DICOM study folder (`ctsam convert`) or CT image file (`ctsam import-ct`) -> results/<case>/ct.nii.gz
# (int16 HU) + ct.json (acquisition facts, no PHI).


rule convert:
    input:
        study=get_study,
    output:
        ct=out("convert"),
        sidecar=out("convert", "ct.json"),
    log:
        log_path("convert"),
    benchmark:
        bench_path("convert")
    params:
        command=convert_command,
        study=study_path,
        config=stage_config("convert"),
    threads: res("convert").threads
    resources:
        mem_mb=res("convert").mem_mb,
        runtime=res("convert").runtime_min,
    conda:
        conda_env("convert")
    shell:
        "python -m ctsam {params.command} {params.study:q} -o {output.ct} --sidecar {output.sidecar}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
