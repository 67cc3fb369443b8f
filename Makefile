# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install migrate bench serve-prod scheduler clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/checkin-bot db upgrade

## Start the bot on its embedded defaults: SQLite file in var/, in-process scheduler, and the
## dev messenger with a phone simulator at http://127.0.0.1:5000/simulator
run: migrate
	$(BIN)/checkin-bot serve --host 127.0.0.1 --port 5000

lint: install
	$(BIN)/ruff check .

## Lint, then the whole suite (SQLite always; PostgreSQL too when TEST_DATABASE_URL is set).
test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/triage.py
	$(BIN)/python bench/webhook.py

## Production layout: gunicorn web workers + one scheduler process (+ PostgreSQL).
serve-prod: migrate
	$(BIN)/gunicorn --workers $${WEB_CONCURRENCY:-$$(nproc)} --bind $${BIND:-0.0.0.0:8000} 'bot.wsgi:make_app()'

## The scheduler on its own. Stop it with SIGTERM or Ctrl-C: the running tick finishes, then
## it exits 0 (allow it 30 s before SIGKILL; see README, Production layout). make passes
## SIGTERM on but then reports itself killed: under a supervisor (systemd, Docker) run
## .venv/bin/checkin-bot scheduler itself, as the Procfile does.
scheduler: migrate
	$(BIN)/checkin-bot scheduler

## Build artefacts only: var/ holds the SQLite database and the spool of patients' messages
## waiting for the database (CHECKIN_SPOOL_DIR), and is never removed here.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
