# One target rule per table and figure (`snakemake table_t4` builds only T4 and its runs).
# Inputs include the report code, so a plotting change rebuilds tables/figures, never runs.


def _table_inputs(name):
    if name == "t1":
        return {"runs": grid.partitions_for_t1(config), "code": grid.report_code_files()}
    inputs = {"runs": runs_of(name), "code": grid.report_code_files()}
    if name == "t8":
        inputs["timing"] = timings_of(name)
    return inputs


def _figure_inputs(name):
    if name == "f3":
        return {"runs": grid.partitions_for_t1(config), "code": grid.report_code_files()}
    return {"runs": runs_of(name), "code": grid.report_code_files()}


for _name in grid.TABLES:
    if not grid.enabled(config, _name):
        continue

    rule:
        name:
            f"table_{_name}"
        input:
            **_table_inputs(_name),
        output:
            csv=report(f"{RESULTS}/tables/{_name}.csv", caption=f"../report/{_name}.rst", category="Tables"),
            md=f"{RESULTS}/tables/{_name}.md",
            tex=f"{RESULTS}/tables/{_name}.tex",
        params:
            fedmic=FEDMIC,
            root=DATA_ROOT,
            name=_name,
            stem=lambda wc, output: os.path.splitext(output.csv)[0],
            target=lambda wc, _n=_name: (
                f"--target {config['tables'][_n]['target']}"
                if (config.get("tables", {}).get(_n) or {}).get("target") is not None
                else ""
            ),
        log:
            f"{LOGS}/tables/{_name}.log",
        localrule: True
        conda:
            "../envs/fedmic.yaml"
        shell:
            "{params.fedmic} table {params.name} --inputs {input.runs} --out {params.stem} --root {params.root}"
            " {params.target} > {log} 2>&1"


for _name in grid.FIGURES:
    if not grid.enabled(config, _name):
        continue

    rule:
        name:
            f"figure_{_name}"
        input:
            **_figure_inputs(_name),
        output:
            png=report(f"{RESULTS}/figures/{_name}.png", caption=f"../report/{_name}.rst", category="Figures"),
            pdf=f"{RESULTS}/figures/{_name}.pdf",
        params:
            fedmic=FEDMIC,
            root=DATA_ROOT,
            name=_name,
            stem=lambda wc, output: os.path.splitext(output.png)[0],
        log:
            f"{LOGS}/figures/{_name}.log",
        localrule: True
        conda:
            "../envs/fedmic.yaml"
        shell:
            "{params.fedmic} figure {params.name} --inputs {input.runs} --out {params.stem} --root {params.root} > {log} 2>&1"
