# Two commands set everything up on a fresh machine:
#   make run   - create .venv, install, run the pipeline on the default dataset
#   make test  - create .venv, install, run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.memclean-installed
TORCH  := torch==2.14.1 torchvision==0.29.1

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: install run test lint bench clean-outputs help

help:
	@echo "make run    - install into .venv and run the pipeline (dvc repro) on the default dataset"
	@echo "make test   - install into .venv, run ruff + mypy, then the test suite"
	@echo "make bench  - run the benchmarks in bench/ (prints JSON)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro
	@echo
	@$(VENV)/bin/memclean summary
	@echo
	@echo "outputs:"
	@echo "  samples      $(CURDIR)/data/interim/samples.parquet  (+ pixels.npy)"
	@echo "  duplicates   $(CURDIR)/data/interim/duplicates.parquet"
	@echo "  scores       $(CURDIR)/data/interim/scores.parquet  (+ ensemble.npy: the subset ensemble)"
	@echo "  influence    $(CURDIR)/data/reports/influence.parquet  (+ noise_matrix.json)"
	@echo "  validation   $(CURDIR)/data/reports/validation.json  (ROC curves of every scorer in data/reports/roc.csv)"
	@echo "  manifest     $(CURDIR)/data/clean/manifest.parquet  (the cleaned dataset artifact)"
	@echo "  report       $(CURDIR)/data/reports/audit.html  (+ audit.md, metrics.json)"
	@echo "  timings      $(CURDIR)/data/reports/timings/  (wall-clock figures, no stage depends on them)"
	@echo "  metrics      .venv/bin/dvc metrics show; plots: .venv/bin/dvc plots show"

test: $(STAMP) lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest

lint: $(STAMP)  ## ruff (format check + lint) and mypy over the whole tree
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/dedup.py --skip-cifar

.PHONY: screenshot
screenshot:  ## render data/reports/audit.html to data/reports/audit.png (needs chromium)
	scripts/screenshot.sh data/reports/audit.html data/reports/audit.png
