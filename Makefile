# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Browser tests drive Debian's Chromium; Playwright never downloads a browser of its own.
CHROMIUM := /usr/bin/chromium
# Without it Chinese and Korean text shows as boxes in the browser tests' screenshots (the tests read the page, not pixels).
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

.PHONY: run test install lint check-migrations messages bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed: $(PYTHON) was not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) .env

# A developer's checkout runs in development mode; production machines set LOYALTY_ENV themselves.
.env:
	echo "LOYALTY_ENV=development" > .env

## Install everything, start the embedded database, load the demo and run web + worker + beat.
run: $(STAMP) .env
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "  Portal:  http://127.0.0.1:$${PORT:-8000}/        Admin: http://127.0.0.1:$${PORT:-8000}/admin/"
	@echo
	PATH="$(CURDIR)/$(BIN):$$PATH" PORT=$${PORT:-8000} $(BIN)/honcho start

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

check-migrations: $(STAMP)
	LOYALTY_ENV=test $(BIN)/python manage.py makemigrations --check --dry-run

# Installed once from Debian's packages (with sudo when not root); nothing runs once it is there.
# Where it cannot be installed (no apt-get, no rights), the browser tests skip with a message.
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	@SUDO=$$([ "$$(id -u)" = 0 ] || command -v sudo); \
	{ command -v apt-get >/dev/null 2>&1 && $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	echo "Chromium could not be installed: the browser tests will be skipped"

$(CJK_FONT):
	@echo "Installing Debian's Noto CJK fonts for legible screenshots"
	@SUDO=$$([ "$$(id -u)" = 0 ] || command -v sudo); \
	{ command -v apt-get >/dev/null 2>&1 && $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-noto-cjk >/dev/null; } || \
	echo "The CJK fonts could not be installed: screenshots will show boxes for Chinese and Korean"

## Lint, layer contract, migrations check, then the whole suite (browser tests too) on PostgreSQL.
test: lint check-migrations $(CHROMIUM) $(CJK_FONT)
	$(BIN)/pytest

## Collect new strings into the four locales and compile them (needs GNU gettext).
messages: $(STAMP)
	$(BIN)/python manage.py makemessages --all --ignore=.venv --ignore=.data --no-obsolete
	$(BIN)/python manage.py compilemessages --ignore=.venv

clean:
	rm -rf $(VENV) .data staticfiles

## Measure throughput and latency at a chain's scale (see bench/README.md). Not part of `make test`.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
