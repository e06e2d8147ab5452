# Tuning (docs/tuning.md): each tuned arm's trials are ordinary training runs (rule train, arms
# <arm>-trialNN on the tuning seed); this checkpoint picks one per (arm, dataset, lambda) on the
# clients' validation splits. A `<arm>-tuned` run reads its selection through the checkpoint, so
# its settings are known only once the selection exists; the selection is an ancient() input,
# so rewriting it with the same choice retrains nothing, and a changed choice retrains exactly
# the runs whose settings (params) it changes.


checkpoint select_hp:
    input:
        runs=trial_runs_of_selection,
        code=grid.selection_code_files(),
    output:
        f"{RESULTS}/tuning/{{dataset}}/lam{{lam}}_K{{clients}}_jr{{jr}}/{{arm}}.json",
    log:
        f"{LOGS}/tuning/{{dataset}}/lam{{lam}}_K{{clients}}_jr{{jr}}/{{arm}}.log",
    localrule: True
    conda:
        FEDMIC_ENV
    params:
        fedmic=FEDMIC,
    shell:
        "{params.fedmic} select --inputs {input.runs:q} --out {output:q} > {log:q} 2>&1"
