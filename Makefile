# Transformers from scratch: course commands.
# For learners:
#   make lab        set everything up, then open the course in JupyterLab
#   make cpu        first-time setup with PyTorch's CPU-only build (Linux without an NVIDIA GPU: ~200 MB
#                   instead of several GB of CUDA libraries); then `make lab` as usual
# For maintainers:
#   make test       unit tests + strict nbval, then strict nbval again under a second numerical
#                   configuration (another machine's rounding: tools/numerics.py)
#   make test-ui    JupyterLab driven by a headless Chromium: lesson 00 and an exercise, run through the UI
#   make exercises  regenerate exercises/ from solutions/ (keeps notebooks a learner edited; FORCE=1 backs
#                   them up to exercises/backups/, then regenerates them)
#   make notebooks  re-execute lessons and solutions in place
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
KERNEL := tfm-course
KERNEL_DISPLAY := Python (Transformers course)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Keep in step with pyproject.toml (tests/test_links_and_setup.py checks it).
TORCH_SPEC := torch>=2.4,<2.14
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# Jupyter looks in this environment's share/jupyter before the user-wide one, so the kernel named
# tfm-course is always the one inside this checkout's .venv, even where another clone registered its own.
export JUPYTER_PREFER_ENV_PATH := 1

.PHONY: lab cpu kernel test test-ui setup exercises notebooks bench bench-quick clean

lab: $(STAMP) kernel
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(ROOT_FLAG)

# PyTorch from its own CPU wheel index first; pip then finds the range satisfied and installs the rest from PyPI.
cpu:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check "$(TORCH_SPEC)" --index-url $(TORCH_CPU_INDEX)
	$(MAKE) setup

# The course's kernel lives inside .venv (share/jupyter/kernels/tfm-course), not in the user's account, and is
# re-registered on every `make lab`: a moved folder or a second clone always runs its own environment.
# The course's JupyterLab defaults (long code lines wrap instead of scrolling) go inside .venv too.
kernel: $(STAMP)
	@$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY)" >/dev/null
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@cp tools/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@echo "kernel '$(KERNEL_DISPLAY)' runs $(abspath $(BIN))/python"

test: $(STAMP)
	$(BIN)/python -m pytest
	TFM_NUMERICS=other $(BIN)/python -m pytest -p no:cacheprovider -n 1 notebooks solutions

# Skips, saying why, where no Chromium is installed (Debian/Ubuntu: apt-get install chromium).
test-ui: $(STAMP) kernel
	$(BIN)/python -m pytest -p no:cacheprovider -n 0 -rs tests_ui

setup: $(STAMP)

# Create or reuse the virtual environment, install the course, register its Jupyter kernel inside it.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY)" >/dev/null
	@touch $(STAMP)

# Rewrite exercises/ from solutions/ (solution regions become stubs), never losing a learner's edits.
exercises: $(STAMP)
	$(BIN)/python tools/make_exercises.py $(if $(FORCE),--force,)

# Re-execute lessons and solutions in place (Restart & Run All), printing each one's time.
notebooks: $(STAMP)
	$(BIN)/python tools/run_notebooks.py notebooks/*.ipynb solutions/*.ipynb

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
