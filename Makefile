# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LS_VERSION := 1.23.2
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed-$(LS_VERSION)

.PHONY: demo test test-fast browser labelstudio-venv bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

## Run the app on SQLite with an admin user and a demo video at http://127.0.0.1:5000, and a job worker (stopped with gunicorn)
demo: $(STAMP)
	$(BIN)/sonolabel demo
	$(BIN)/sonolabel worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/gunicorn --workers 2 --threads 4 --bind 127.0.0.1:5000 'annotator:create_app()'

## Run the whole test suite, every marker (SQLite; also PostgreSQL/Redis when TEST_DATABASE_URL/TEST_REDIS_URL are set)
test: $(STAMP) browser labelstudio-venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

## Run the tests that neither train, read ../shared/data, run long end to end nor drive Chromium
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

# Playwright drives Debian's chromium; install it when missing (needs root or sudo).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

## Label Studio, pinned, in a virtual environment of its own (its pins are not ours) for the round-trip test; if it cannot be installed that test skips and says why
labelstudio-venv: $(LS_STAMP)

$(LS_STAMP):
	@rm -rf $(LS_VENV) && $(PYTHON) -m venv $(LS_VENV) && \
	$(LS_VENV)/bin/pip install -q --upgrade pip >$(LS_VENV)/install.log 2>&1 && \
	$(LS_VENV)/bin/pip install -q 'label-studio==$(LS_VERSION)' >>$(LS_VENV)/install.log 2>&1 && \
	touch $@ || { rm -f $(LS_VENV)/bin/label-studio; \
	  echo "label-studio==$(LS_VERSION) not installed (see $(LS_VENV)/install.log): its round-trip test will skip"; }

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LS_VENV) instance .pytest_cache
