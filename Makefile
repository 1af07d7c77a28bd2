# Two commands for a fresh Debian/Ubuntu machine (Python >= 3.11):
#   make tutorial   set up .venv, then run all six notebooks headless (executed copies in executed/)
#   make test       set up .venv, then run the quick tests (pytest for helpers, nbval for the notebooks, tiny profile)
# `make check` is what CI runs: the quick tests plus the extended ones (the notebooks in the full profile
# against Hub-layout stand-ins, a Colab emulation, killed training runs, ...).
# `make bench` runs the CPU benchmarks, `make bench-gpu` the GPU ones. Everything lands in .venv/ at the repo root,
# installed from the lock (requirements/cpu.txt, or requirements/cuda.txt on an NVIDIA GPU) by tools/setup_env.py;
# `make lock` regenerates the lock from pyproject.toml's ranges and tests it.
# `make preflight` checks this machine (GPU, audio decoding, disk, the Hub or a mirror); `make mirror DIR=...`
# copies the model and the dataset for machines without internet (workshop/README.md).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
EXECUTED := executed

# The tests run the offline tiny profile unless asked otherwise: `make test TEST_PROFILE=full` on a GPU
# (its checked notebook outputs are the tiny profile's, so nbval will report those cells).
TEST_PROFILE ?= tiny
# The notebooks under test write to a folder of their own, emptied first: every run trains from scratch,
# and `make tutorial` afterwards does not find the tests' finished run in notebooks/outputs/.
TEST_OUTPUTS := $(CURDIR)/.cache/test-outputs
PYTEST := rm -rf $(TEST_OUTPUTS) && VOXTRAL_OUTPUTS=$(TEST_OUTPUTS) VOXTRAL_PROFILE=$(TEST_PROFILE) \
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --durations=15 -p no:cacheprovider

.PHONY: setup lock system-packages browser tutorial test check bench bench-gpu gpu-check rehearsal preflight mirror clean train

system-packages:
	@PYTHON=$(PYTHON) tools/install_system_packages.sh

# The Python check comes first: an old Python is told how to get a new one before anything is installed.
# tools/setup_env.py does nothing when .venv already matches the lock, and brings it in line when the lock changed
# (SETUP_ARGS="--dry-run --venv DIR" resolves every install command without installing).
setup:
	@$(PYTHON) tools/setup_env.py --check-python
	@$(MAKE) --no-print-directory system-packages
	@$(PYTHON) tools/setup_env.py $(SETUP_ARGS)

# New versions, deliberately: resolve pyproject.toml's ranges afresh, install, run the quick tests, report.
lock: setup
	$(PY) tools/lock.py

# No progress bars (tqdm's, and those of the Hugging Face libraries, which pass their own setting): the
# executed copies are read after the run, where a progress bar saved while it ran shows 0%.
tutorial: setup
	@mkdir -p $(EXECUTED)
	@# Kernels over IPC sockets, not TCP (which ipykernel warns about); absolute socket paths, since the kernel
	@# runs in notebooks/ and nbconvert here, and short ones (a socket path has at most ~100 characters).
	@set -e; sockets=$$(mktemp -d /tmp/voxtral-kernels.XXXXXX); trap 'rm -rf "$$sockets"' EXIT; \
	for nb in $(NOTEBOOKS); do \
	  echo "== running $$nb"; start=$$(date +%s); \
	  TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 $(PY) -m jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1800 \
	    --KernelManager.transport=ipc --KernelManager.ip="$$sockets/kernel" \
	    --output-dir $(EXECUTED) "$$nb" --log-level WARN; \
	  echo "   done in $$(( $$(date +%s) - start )) s"; \
	done
	@echo "Executed notebooks, with outputs: $(CURDIR)/$(EXECUTED)/"

test: setup
	$(PYTEST) -m "not extended"

# tests/scenarios/test_browser.py drives a real Chromium (Debian's, no Playwright download): installed once here.
browser: setup
	tools/install_browser.sh

# The lessons' checked outputs are compared by the Colab emulation (tests/scenarios/test_colab_emulation.py), which runs
# each lesson in a fresh Colab-like runtime; nbval runs the solutions notebooks.
check: setup browser
	$(PYTEST) --ignore-glob='notebooks/[0-9]*.ipynb'

# Notebook 03 as a command: make train ARGS="--profile tiny --max-steps 20" (python -m tutorial_kit.train --help)
train: setup
	$(PY) -m tutorial_kit.train $(ARGS)

bench: setup
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.feature_routes

# On a GPU: LoRA training and evaluation with the full-size architecture (random weights, no download).
bench-gpu: setup
	$(PY) -m benchmarks.train_step --json benchmarks/results/gpu_train_step.json
	$(PY) -m benchmarks.evaluation_full_size --json benchmarks/results/gpu_evaluation.json

# On a GPU lent for a few minutes: the T4 route (fp16, 4-bit, 15 GiB), then bf16 at full size, in 8 minutes at most,
# each part with its own time limit; benchmarks/results/gpu_check.json and .md are rewritten after every part.
# No setup (a lent machine may reach no registry: benchmarks/README.md, "One GPU check in a short loan"): .venv's
# Python when there is one, else python3. GPU_CHECK_ARGS=--dry-run runs the same parts on the CPU at tiny size.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

# On a GPU: the five notebooks in the full profile against a full-size stand-in of the Hub repos, as the
# card is and as a T4 (fp16, 4-bit, 15 GiB); per-notebook time and peak memory in benchmarks/results/.
REHEARSAL_STEPS ?= 20
rehearsal: setup
	$(PY) tools/rehearsal.py --size full --card native --max-steps $(REHEARSAL_STEPS) --json benchmarks/results/rehearsal_native.json
	$(PY) tools/rehearsal.py --size full --card t4 --max-steps $(REHEARSAL_STEPS) --json benchmarks/results/rehearsal_t4.json

# Is this machine ready? PASS / FAIL (with the fix) / INFO per check; exits 1 when a check fails.
preflight: setup
	$(PY) -m tutorial_kit.preflight

# An offline copy of the model and the dataset: make mirror DIR=/media/usb-stick [MODEL=id-or-folder] [DATASET=id-or-folder]
mirror: setup
	@test -n "$(DIR)" || { echo "usage: make mirror DIR=/path/to/stick [MODEL=...] [DATASET=...]"; exit 2; }
	$(PY) -m tutorial_kit.mirror "$(DIR)" $(if $(MODEL),--model "$(MODEL)") $(if $(DATASET),--dataset "$(DATASET)")

clean:
	rm -rf $(EXECUTED) outputs .pytest_cache
