# One federated simulation per job. GPU-tagged: at most as many at once as the `gpu` pool
# (common.smk: the machine's GPUs, none on a CPU machine); the SLURM profile sends these jobs
# to a GPU partition. On SLURM,
# profiles/slurm/grouped bundles several of these jobs into one GPU job (group `train_group`,
# set from the profile so this rule stays ungrouped elsewhere; docs/slurm.md).


rule train:
    input:
        partition=partition_of_run,
        code=code_of_run,
        selection=selection_of_run,
    output:
        run=f"{RESULTS}/runs/{{dataset}}/lam{{lam}}_K{{clients}}_jr{{jr}}/{{arm}}/seed{{seed}}.json",
        timing=f"{RESULTS}/runs/{{dataset}}/lam{{lam}}_K{{clients}}_jr{{jr}}/{{arm}}/seed{{seed}}.timing.json",
    log:
        f"{LOGS}/train/{{dataset}}/lam{{lam}}_K{{clients}}_jr{{jr}}/{{arm}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/train/{{dataset}}/lam{{lam}}_K{{clients}}_jr{{jr}}/{{arm}}/seed{{seed}}.tsv"
    conda:
        FEDMIC_ENV
    threads: config.get("threads_per_run", 1)
    resources:
        gpu=1,
        runtime=train_runtime_min,
        mem_mb=train_mem_mb,
    params:
        train=FEDMIC_TRAIN,
        root=DATA_ROOT,
        fingerprint=run_fingerprint,
        settings=train_settings,
        selection=lambda wc, input: f"--selection {shlex.quote(str(input.selection))}" if input.selection else "",
    shell:
        "{params.train} {params.settings} --fingerprint {params.fingerprint} {params.selection} --replace-stale-checkpoint"
        " --partition {input.partition:q} --root {params.root:q} --out {output.run:q} > {log:q} 2>&1"
