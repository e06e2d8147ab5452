# Quick start: `make demo` (the pipeline on config/demo.yaml) and `make test`.
# Both create .venv on first use. TORCH is the PyTorch requirement; TORCH_INDEX the index it
# alone comes from: empty (the default) is pip's own configuration, where Linux torch is the
# CUDA build (several GB with its nvidia-* libraries); TORCH_INDEX=$(TORCH_CPU_INDEX) takes
# the CPU-only build (README, "Install"). MEDMNIST_ROOT is where the .npz files are read or
# downloaded to, by default fedmic's rule (fedmic/dataroot.py: $FEDMIC_MEDMNIST_ROOT,
# ../shared/data/medmnist, ~/.medmnist).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
CORES ?= 2
MEDMNIST_ROOT ?= $(shell python3 -m fedmic.dataroot)
export FEDMIC_MEDMNIST_ROOT := $(abspath $(MEDMNIST_ROOT))

.PHONY: demo test compare participation paper report install clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	# flower: Flower's deployment runtime, for tests/test_flower_*.py and docs/deploy.md (Python >= 3.11);
	# tensorboard: for the per-round scalars and tests/test_watch.py
	$(PY) -m pip install -q -c constraints.txt -e ".[test,slurm,flower,tensorboard]"
	# Reference for tests/test_data.py only: the carried MedMNIST registry is checked against
	# medmnist's. --no-deps and last: its hard torchvision requirement would pull a second,
	# multi-GB torch build, and fedmic itself never imports medmnist.
	$(PY) -m pip install -q --no-deps "medmnist==3.0.2"
	touch $@

# The demo's runs are small 1-thread jobs: one per core.
demo: install
	@echo "MedMNIST root: $(FEDMIC_MEDMNIST_ROOT)"
	$(VENV)/bin/snakemake all --cores $(CORES) --configfile config/demo.yaml

# Every method tuned, then on the three local datasets, 5 seeds, 30 rounds of all clients; low
# participation; FedMIC's parts and readings (config/compare.yaml, docs/results.md).
compare: install
	$(VENV)/bin/snakemake table_tuning table_t2 table_t3 table_t4 table_t5 table_t9 table_claims figure_learning_curves \
	  figure_acc_vs_bytes figure_svd_ranks --cores $(CORES) --configfile config/compare.yaml

# compare's low-participation study again at λ 0.5, where the methods have room (an exploratory
# follow-up; config/participation.yaml, docs/results.md): results-participation/
participation: install
	$(VENV)/bin/snakemake table_tuning table_t3 table_claims --cores $(CORES) \
	  --configfile config/compare.yaml config/participation.yaml

paper: install
	$(VENV)/bin/snakemake --cores $(CORES) all

report: install
	$(VENV)/bin/snakemake all --cores $(CORES) --report results-demo/report.html --configfile config/demo.yaml

test: install
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean-demo:
	rm -rf results-demo logs-demo
