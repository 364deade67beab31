# The two commands of the README. Each makes its own virtual environment and installs what it needs.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/mbrlax: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/mbrlax

install: $(BIN)/mbrlax

# The main job: MBPO on Pendulum-v1 with a progress bar; the learning curve is runs/<run>/curve.png.
demo: install
	$(BIN)/mbrlax train mbpo --env Pendulum-v1

# Lint, type check, then the test suite on every core (fast tests; learning tests marked slow run in
# benchmarks/). Any failure, and pytest's exit 5 (no tests collected), fails the target.
test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n auto

clean:
	rm -rf $(VENV) runs .pytest_cache
