# The synthetic demo cohort, one case per job (used when neither samples nor studies_dir is set).


rule demo_case:
    output:
        dicom=directory(demo_out("dicom")),
        coarse=demo_out("coarse.nii.gz"),
        truth=demo_out("truth.nii.gz"),
        meta=demo_out("phantom.json"),
        lesion_clicks=demo_out(DEMO_LESION_CLICKS),
        lesion_truth=demo_out(DEMO_LESION_TRUTH),
    log:
        log_path("demo"),
    benchmark:
        bench_path("demo")
    params:
        dir=demo_dir_of,
        cases=WF["demo"]["cases"],
        seed=WF["demo"]["seed"],
        corrupt="--corrupt-case" if WF["demo"]["corrupt_case"] else "",
        defects="--defects" if WF["demo"].get("defects") else "",
    threads: res("demo").threads
    resources:
        mem_mb=res("demo").mem_mb,
        runtime=res("demo").runtime_min,
    conda:
        conda_env("demo")
    shell:
        "python -m ctsam demo-cohort {params.dir} --cases {params.cases} --seed {params.seed} {params.corrupt} {params.defects}"
        " --only {wildcards.case} --case {wildcards.case} 2> {log}"
