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

# The test suite (fast tests; learning tests marked slow run in benchmarks/). Exit 5 (no tests) fails.
test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
