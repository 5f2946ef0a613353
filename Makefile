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

.PHONY: all venv warmup test test-slow demo bench clean distclean

all: test

venv: $(STAMP)

# tools/heartbeat.py: a line every 5 s while a silent step (venv, pip unpacking wheels) runs.
HEARTBEAT = tools/heartbeat.py --every 5

$(PY):
	$(PYTHON_BOOT) $(HEARTBEAT) --label "python -m venv" -- $(PYTHON_BOOT) -m venv $(VENV)

# Re-install only when the package metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) $(HEARTBEAT) --label "pip install" -- $(PIP) install -e '.[dev]'
	$(PY) $(HEARTBEAT) --label "pip install" -- $(PIP) install --no-deps qonnx mlxtend
	touch $(STAMP)

# Then compile the Numba kernels ahead of time (`aidge-lite warmup`, a line every
# few seconds; ~1 min of CPU the first time, seconds once cached) into the kernels'
# own cache: `make demo` starts warm, and the test workers seed their caches from it
# (tests/conftest.py). Again after `make clean` or an edit of kernels/*.py.
WARM := .numba_cache/.warm

$(WARM): $(STAMP) $(wildcard kernels/*.py)
	$(TEST_ENV) $(PY) -u -m aidge_lite.cli warmup
	mkdir -p $(dir $(WARM)) && touch $(WARM)

warmup: $(WARM)

# Test workers (pytest-xdist). Most of a cold run is Numba compiling kernel
# signatures; two workers compile side by side, each in its own Numba cache
# (.numba_cache/gwN, see tests/conftest.py: a shared cache is not safe).
TEST_WORKERS ?= 2

test: $(WARM)
	$(TEST_ENV) HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m "not slow" -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist worksteal

test-slow: $(WARM)
	$(TEST_ENV) HYPOTHESIS_PROFILE=slow $(PY) -m pytest -q -m slow -p no:cacheprovider

demo: $(WARM)
	$(PY) -u -m aidge_lite.demo

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf build dist out *.egg-info .pytest_cache .hypothesis .numba_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o \( -name '*.nbi' -o -name '*.nbc' \) -type f -exec rm -f {} +

# Also drop the virtual env (next `make test` rebuilds it).
distclean: clean
	rm -rf $(VENV)
