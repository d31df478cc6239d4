# ctsam: two commands on a fresh machine (Python 3.11+, git, make):
#   make demo    the demo cohort end to end (results/, report at results/cohort/report.html)
#   make test    the tests (python -m pytest inside .venv)
# The first call creates .venv from requirements/lock.txt (exact versions) and torch:
#   TORCH=cpu (default): torch 2.13.0 CPU build (about 2.9 GB venv)
#   TORCH=cuda:          torch 2.13.0 CUDA build from PyPI (adds the nvidia-* wheels, several GB more)
# Switching TORCH later: make clean-venv, then make demo TORCH=cuda.

PYTHON ?= python3
TORCH ?= cpu
VENV ?= .venv
TORCH_VERSION := 2.13.0
CORES ?= all
PYTEST_ARGS ?=

ifeq ($(TORCH),cpu)
TORCH_REQ := torch==$(TORCH_VERSION)+cpu
TORCH_INDEX := https://download.pytorch.org/whl/cpu/
TORCH_PIP := --extra-index-url $(TORCH_INDEX)
else ifeq ($(TORCH),cuda)
TORCH_REQ := torch==$(TORCH_VERSION)
TORCH_PIP :=
else
$(error TORCH must be cpu or cuda, not '$(TORCH)')
endif

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.ctsam-$(TORCH)

.PHONY: demo test lint venv lock clean-venv

# workflow jobs and tests call `python` / `snakemake` from PATH: the venv's, as if it were activated
demo test: export PATH := $(abspath $(VENV))/bin:$(PATH)
demo test: export VIRTUAL_ENV := $(abspath $(VENV))

demo: $(STAMP)
	$(VPY) -m snakemake --profile workflow/profiles/local --cores $(CORES)

test: $(STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS)

# lint, format and types, configured in pyproject.toml (.ci/run runs this before the tests)
lint: $(STAMP)
	$(VENV)/bin/ruff check ctsam tests benchmarks
	$(VENV)/bin/ruff format --check ctsam tests benchmarks
	$(VENV)/bin/mypy ctsam

venv: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ctsam needs Python 3.11 or newer (found %s): set PYTHON=python3.11" % sys.version.split()[0])'
	@if [ -d $(VENV) ] && ls $(VENV)/.ctsam-* >/dev/null 2>&1 && [ ! -e $(STAMP) ]; then \
		echo "$(VENV) holds another torch build ($$(ls $(VENV)/.ctsam-*)); run 'make clean-venv' first" >&2; exit 2; fi
	$(PYTHON) -m venv $(VENV)
	@# the CPU index only where it answers (offline mirrors and find-links hold the same wheel; no retries)
	@idx=""; if [ -n "$(TORCH_PIP)" ]; then \
		if $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)torch/', timeout=5)" >/dev/null 2>&1; then \
			idx="$(TORCH_PIP)"; else echo "$(TORCH_INDEX) does not answer: $(TORCH_REQ) from the configured pip indexes"; fi; fi; \
	echo "$(VPY) -m pip install -q $$idx $(TORCH_REQ)"; \
	$(VPY) -m pip install --disable-pip-version-check -q $$idx "$(TORCH_REQ)"
	$(VPY) -m pip install --disable-pip-version-check -q -r requirements/lock.txt -c requirements/torch-$(TORCH).txt
	$(VPY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@du -sh $(VENV) | sed 's/^/venv size: /'
	@touch $(STAMP)

# Regenerate the lock from the current .venv (after changing pyproject.toml's dependencies).
lock:
	head -4 requirements/lock.txt > requirements/lock.txt.new
	$(VPY) -m pip freeze --exclude-editable | grep -v '^torch==' >> requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt

clean-venv:
	rm -rf $(VENV)
