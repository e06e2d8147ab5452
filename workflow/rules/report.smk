# Results file, provenance, and one target rule per table and figure (`snakemake table_t4`
# builds only T4 and its runs). Every table and figure is a view over a tidy results file
# (fedmic collect, results/README.md): results.csv.gz holds every run; a table reads the file
# of its own runs (tidy/<first table with the same runs>.csv.gz), so it needs no other run.
# Inputs include the report code, so a plotting change rebuilds tables/figures, never runs.


rule collect_all:
    input:
        runs=[grid.run_path(RESULTS, k) for k in RUNS],
        timing=[grid.timing_file(RESULTS, k) for k in RUNS],
        code=grid.report_code_files(),
    output:
        results=f"{RESULTS}/results.csv.gz",
        provenance=report(
            f"{RESULTS}/provenance.yaml",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"item": "provenance and resolved configuration"},
        ),
    log:
        f"{LOGS}/collect/all.log",
    localrule: True
    conda:
        FEDMIC_ENV
    params:
        fedmic=FEDMIC,
        config=lambda wc: json.dumps(config, sort_keys=True, default=str),
        source=WORKFLOW_SOURCE,
    shell:
        "{params.fedmic} collect --inputs {input.runs:q} --out {output.results:q} --provenance {output.provenance:q}"
        " --config {params.config:q} --source {params.source:q} > {log:q} 2>&1"


rule collect:
    input:
        runs=lambda wc: runs_of(wc.runs),
        timing=lambda wc: timings_of(wc.runs),
        code=grid.report_code_files(),
    output:
        f"{RESULTS}/tidy/{{runs}}.csv.gz",
    log:
        f"{LOGS}/collect/{{runs}}.log",
    wildcard_constraints:
        runs=r"[a-z0-9_]+",
    localrule: True
    conda:
        FEDMIC_ENV
    params:
        fedmic=FEDMIC,
    shell:
        "{params.fedmic} collect --inputs {input.runs:q} --out {output:q} > {log:q} 2>&1"


# One rule per kind: every enabled table and every enabled figure of fedmic/paper/ gets its
# named target (table_t4, figure_f3) from the same definition; its options reach the command
# as its resolved config section.
for _out in paper.enabled(config, "table"):

    rule:
        name:
            _out.target
        input:
            **report_inputs(_out.name),
        output:
            csv=report(
                f"{RESULTS}/tables/{_out.name}.csv",
                caption=f"../report/{_out.name}.rst",
                category="Tables",
                labels=report_labels(_out.name),
            ),
            md=f"{RESULTS}/tables/{_out.name}.md",
            tex=f"{RESULTS}/tables/{_out.name}.tex",
        log:
            f"{LOGS}/tables/{_out.name}.log",
        localrule: True
        conda:
            FEDMIC_ENV
        params:
            fedmic=FEDMIC,
            root=DATA_ROOT,
            name=_out.name,
            stem=lambda wc, output: os.path.splitext(output.csv)[0],
            options=report_options(_out.name),
        shell:
            "{params.fedmic} table {params.name} --inputs {input.runs:q} --out {params.stem:q} --root {params.root:q}"
            " --options {params.options:q} > {log:q} 2>&1"


for _out in paper.enabled(config, "figure"):

    rule:
        name:
            _out.target
        input:
            **report_inputs(_out.name),
        output:
            png=report(
                f"{RESULTS}/figures/{_out.name}.png",
                caption=f"../report/{_out.name}.rst",
                category="Figures",
                labels=report_labels(_out.name),
            ),
            pdf=f"{RESULTS}/figures/{_out.name}.pdf",
        log:
            f"{LOGS}/figures/{_out.name}.log",
        localrule: True
        conda:
            FEDMIC_ENV
        params:
            fedmic=FEDMIC,
            root=DATA_ROOT,
            name=_out.name,
            stem=lambda wc, output: os.path.splitext(output.png)[0],
            options=report_options(_out.name),
        shell:
            "{params.fedmic} figure {params.name} --inputs {input.runs:q} --out {params.stem:q} --root {params.root:q}"
            " --options {params.options:q} > {log:q} 2>&1"
