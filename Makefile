# sipguard: `make run` starts the demo, `make test` runs every check.
# Both set up what they need: a virtualenv with the package and its test
# extras, SIPp (Debian package sip-tester), redis-server (for the shared
# rate-table tests) and Kamailio (for the edge-proxy tests) when they are
# missing.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup run test lint unit integration clean sipp-installed redis-installed \
	kamailio-installed bench bench-peers bench-micro

setup: $(VENV)/.installed sipp-installed redis-installed kamailio-installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "sipguard needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

sipp-installed:
	@command -v sipp >/dev/null 2>&1 || { \
		$(SUDO) apt-get install -y sip-tester || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y sip-tester; }; }

redis-installed:
	@command -v redis-server >/dev/null 2>&1 || { \
		$(SUDO) apt-get install -y redis-server || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y redis-server; }; }

# The edge-proxy tests and the benchmark start their own Kamailio with their
# own configuration. The package's service, which Debian starts on install,
# would hold port 5060 on every address (the demo's port): a fresh install
# turns it off again.
kamailio-installed:
	@command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || { \
		{ $(SUDO) apt-get install -y kamailio || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y kamailio; }; } && \
		{ ! command -v systemctl >/dev/null 2>&1 || \
		$(SUDO) systemctl disable --now kamailio.service >/dev/null 2>&1 || true; }; }

run: setup
	VENV=$(VENV) bash sipp_scenarios/demo.sh

lint: setup
	$(BIN)/ruff check sipguard tests bench
	$(BIN)/ruff format --check sipguard tests bench
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not integration" -q

integration: setup
	$(BIN)/pytest -m integration -q

test: lint
	$(BIN)/pytest -q

# Side-by-side SIPp benchmark (bench/peers/README.md); BENCH_ARGS=--quick for a
# smoke run of a few minutes. Peers that are not installed are skipped.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

# Hot-path micro-benchmarks with pyperf (bench/bench_hotpath.py): parse, decide
# at 1M ranges, rate check, 403 and outbound INVITE, per call. Installs the
# `bench` extra (pyperf) when it is missing. BENCH_MICRO_ARGS=--fast for a rough
# run of a few minutes; -o FILE.json keeps the figures.
bench-micro: setup
	@$(BIN)/python -c 'import pyperf' 2>/dev/null || $(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/bench_hotpath.py $(BENCH_MICRO_ARGS)

# The optional peers: Kamailio (Debian, installed by setup), Sippy B2BUA and
# matplotlib (for the plot).
bench-peers: setup
	$(BIN)/pip install -q matplotlib sippy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis logs
