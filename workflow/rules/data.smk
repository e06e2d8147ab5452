# Download (verified by MD5) and partition. Both are local rules: compute nodes may have no internet.


rule download:
    output:
        protected(dataset_file("{dataset}")),
    log:
        f"{LOGS}/download/{{dataset}}.log",
    localrule: True
    conda:
        FEDMIC_ENV
    params:
        fedmic=FEDMIC,
        root=lambda wc, output: os.path.dirname(output[0]),
        size=IMAGE_SIZE,
    shell:
        "{params.fedmic} download --dataset {wildcards.dataset} --size {params.size} --root {params.root:q} --quiet"
        " > {log:q} 2>&1"


# ancient(): a dataset copied or downloaded again gets a new mtime but the same bytes (every
# load checks the registry's MD5), so it must not repartition and retrain the whole grid.
rule partition:
    input:
        npz=lambda wc: ancient(dataset_file(wc.dataset)),
    output:
        f"{RESULTS}/partitions/{{dataset}}/{{scheme}}_lam{{lam}}_K{{clients}}_seed{{seed}}.json",
    log:
        f"{LOGS}/partition/{{dataset}}/{{scheme}}_lam{{lam}}_K{{clients}}_seed{{seed}}.log",
    localrule: True
    conda:
        FEDMIC_ENV
    params:
        fedmic=FEDMIC,
        root=DATA_ROOT,
        min_size=config.get("partition", {}).get("min_size", 10),
        size=IMAGE_SIZE,
    shell:
        "{params.fedmic} partition --dataset {wildcards.dataset} --size {params.size} --root {params.root:q}"
        " --scheme {wildcards.scheme}"
        " --lam {wildcards.lam} --clients {wildcards.clients} --seed {wildcards.seed}"
        " --min-size {params.min_size} --out {output:q} > {log:q} 2>&1"
