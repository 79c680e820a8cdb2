# The README's two commands: `make parity` (the parity report) and `make test` (the tests,
# both tox legs). Everything they need is installed from this repository's own files.
SHELL := /bin/bash
PY312 := $(shell scripts/find-python312)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: parity test lint bench clean

# The C kernel (parity/_fused.c) is compiled by the install: reinstall when it changes.
$(STAMP): pyproject.toml parity/_fused.c parity/_fused_kernels.h
	@test -n "$(PY312)" || { echo "no Python 3.12: see scripts/find-python312" >&2; exit 1; }
	"$(PY312)" -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

## The main job: layer-by-layer parity of the three models, Lucid against torch (ARGS for options).
parity: $(STAMP)
	$(VENV)/bin/python -m parity $(ARGS)

## The tests: tox legs py312 (lucid-dl 2.9.0) and lucid216 (lucid-dl 2.16.0 patched by the kit).
# tox does not find pyenv's interpreters through its shims: put 3.12's folder on PATH.
test: $(STAMP)
	PATH="$(dir $(PY312)):$$PATH" $(VENV)/bin/tox run -e py312,lucid216 $(if $(ARGS),-- $(ARGS))

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_models.py
	$(VENV)/bin/python bench/bench_parity.py

clean:
	rm -rf $(VENV) .tox
