# One way to run things. Every target builds on `install`, which creates .venv from the pinned set.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test test-quick lint fmt bench models clean

install: $(STAMP) system-deps

# What PyPI cannot provide (scripts/system-deps says why): the edge's fallback MQTT broker, and tmux for
# the TUI's terminal test. Checked every time (it is cheap); installed with apt-get where allowed.
SYSTEM_DEPS := mosquitto
system-deps:
	@scripts/system-deps $(SYSTEM_DEPS)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/fleetops demo

test: SYSTEM_DEPS += tmux
test: install
	$(BIN)/pytest -q

# The quick subset a developer runs while working: no end-to-end process tests.
test-quick: install
	$(BIN)/pytest -q -m 'not slow'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

# Retrain the shipped models from generated data and rewrite their cards (deterministic: same seeds).
models: install
	$(BIN)/python scripts/train_models.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
