# CT + coarse labels -> click prompts per structure (world mm); temporary, consumed by refine.


rule seed:
    input:
        ct=out("convert"),
        coarse=out("coarse"),
    output:
        prompts=temp(out("seed")),
    log:
        log_path("seed"),
    benchmark:
        bench_path("seed")
    params:
        config=stage_config("seed"),
    threads: res("seed").threads
    resources:
        mem_mb=res("seed").mem_mb,
        runtime=res("seed").runtime_min,
    conda:
        conda_env("seed")
    shell:
        "python -m ctsam seed {input.ct} {input.coarse} -o {output.prompts}"
        " --case {wildcards.case} --config {params.config} 2> {log}"
