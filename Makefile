# Transformers from scratch: course commands.
#   make lab    set everything up, then open the course in JupyterLab
#   make test   set everything up, then run every test: unit tests + strict nbval, then strict nbval again
#               under a second numerical configuration (another machine's rounding: tools/numerics.py)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
KERNEL := tfm-course
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test setup exercises notebooks bench bench-quick clean

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(ROOT_FLAG)

test: $(STAMP)
	$(BIN)/python -m pytest
	TFM_NUMERICS=other $(BIN)/python -m pytest -p no:cacheprovider -n 1 notebooks solutions

setup: $(STAMP)

# Create or reuse the virtual environment, install the course, register its Jupyter kernel.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/python -m ipykernel install --user --name $(KERNEL) --display-name "Python (Transformers course)" >/dev/null
	@touch $(STAMP)

# Rewrite exercises/ from solutions/ (solution regions become stubs).
exercises: $(STAMP)
	$(BIN)/python tools/make_exercises.py

# Re-execute lessons and solutions in place (Restart & Run All), printing each one's time.
notebooks: $(STAMP)
	$(BIN)/python tools/run_notebooks.py notebooks/*.ipynb solutions/*.ipynb

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
