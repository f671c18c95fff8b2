# Fresh-machine entry points: `make demo` (main job) and `make test` (test suite).
# Both create or reuse the virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs

.PHONY: venv demo test lint clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The main job on the embedded default: the loss-weight ablation sweep at demo scale (real data:
# scikit-learn's digits; local trial runners; MLflow store in runs/mlflow.db), then its report.
# Rerunning resumes the sweep.
demo: venv
	$(VENV)/bin/mugs-orch sweep sweeps/loss_weights.yaml --workdir $(WORKDIR)
	$(VENV)/bin/mugs-orch report loss_weights --workdir $(WORKDIR) --out $(WORKDIR)/reports/loss_weights

lint: venv
	$(VENV)/bin/ruff check .

# The test suite (needs root for the local SLURM cluster; see scripts/slurm-local).
test: venv lint
	$(PY) -m pytest -q --durations=25

clean-venv:
	rm -rf $(VENV)
