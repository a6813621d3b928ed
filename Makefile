# Two commands on a fresh clone: `make demo` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ROOT ?= autoseg_data/demo

.PHONY: demo test lint format install clean bench bench-quick bench-venv chromium gpu-check

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned to the local CPU wheel: any other spec pulls gigabytes of CUDA packages.
$(STAMP): $(BIN)/python setup.py pyproject.toml
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The report test renders the page in headless Chromium (Debian's package). Installed when
# missing and apt is usable (root); otherwise that one test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  [ "$$(id -u)" = 0 ] && (apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not installed: the report rendering test will be skipped"

test: $(STAMP) chromium
	$(BIN)/ruff check autoseg tests benchmarks
	$(BIN)/ruff format --check autoseg tests benchmarks
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	AUTOSEG_ROOT=$(DEMO_ROOT) $(BIN)/python -m autoseg.demo

# Side-by-side benchmarks against nnU-Net v2 (not part of `make test`): builds .venv-bench with
# nnunetv2 (torch pinned to the CPU wheel, no timm/torchvision), checks our nnU-Net export with
# nnU-Net's own dataset check, then runs every benchmark (both systems in the same run) and
# writes benchmarks/results/{*.json,summary.md,ratios.png}. `make bench-quick`: a smoke run
# with small settings, into benchmarks/results/quick/.
# BENCH_ARGS, e.g.: --only training,inference --device cuda --cpus 0,1 --threads 2
BENCH_ARGS ?=

bench-venv:
	bash benchmarks/make_bench_venv.sh

bench: $(STAMP) bench-venv
	.venv-bench/bin/python -m pytest -q tests/test_nnunet_export.py  # nnU-Net's own dataset check
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

bench-quick: $(STAMP) bench-venv
	$(BIN)/python -m benchmarks.run_all --quick $(BENCH_ARGS)

# Every GPU check in one call, one summary (benchmarks/gpu_check.py); no CUDA: one line, exit 2.
# GPU_CHECK_ARGS, e.g.: --skip bench --out DIR
GPU_CHECK_ARGS ?=

gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix autoseg tests benchmarks
	$(BIN)/ruff format autoseg tests benchmarks

clean:
	rm -rf $(VENV) .venv-bench autoseg_data .pytest_cache .ruff_cache
