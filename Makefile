# Two entry points for a fresh machine with Python 3.11 and make: `make demo`, `make test`.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv wheel-check bench clean chromium

# An editable install: it puts the checkout on sys.path (see package-dir in pyproject.toml),
# so twistd finds twisted/plugins/wazuhcluster_plugin.py there too.
$(STAMP): pyproject.toml
	@echo "Setting up $(VENV) (editable install of this checkout)..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# make demo FRESH=1 starts from empty homes; make demo PORT=25160 uses another master port.
FRESH ?=
PORT  ?= 15160
demo: $(STAMP)
	$(BIN)/wazuhcluster-demo --dir demo --port $(PORT) $(if $(FRESH),--fresh)

test: $(STAMP) wheel-check chromium
	set -o pipefail; WAZUHCLUSTER_HYPOTHESIS_PROFILE=$${WAZUHCLUSTER_HYPOTHESIS_PROFILE:-ci} \
	  $(BIN)/python -W error::DeprecationWarning -m twisted.trial -j2 tests 2>&1 \
	  | $(PYTHON) .ci/summary.py

# `pip install .` into a fresh virtualenv must give a working `twistd wazuhcluster` plugin
# and the console scripts (the plugin file must be packaged without twisted/__init__.py).
wheel-check: $(STAMP)
	@rm -rf build/wheel-check && mkdir -p build/wheel-check
	@$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps \
	  -w build/wheel-check .
	@$(PYTHON) -m venv build/wheel-check/venv
	@build/wheel-check/venv/bin/pip install --quiet --disable-pip-version-check \
	  build/wheel-check/wazuhcluster-*.whl
	@build/wheel-check/venv/bin/twistd --help | grep wazuhcluster > /dev/null
	@build/wheel-check/venv/bin/twistd wazuhcluster --help | grep -- --home > /dev/null
	@test -x build/wheel-check/venv/bin/wazuhcluster-control
	@test -x build/wheel-check/venv/bin/wazuhcluster-users
	@build/wheel-check/venv/bin/python -c "from wazuhcluster.api.service import SPEC_PATH; assert open(SPEC_PATH).read().startswith('openapi')"
	@test -x build/wheel-check/venv/bin/wazuhcluster-certs
	@build/wheel-check/venv/bin/python -c "import wazuhcluster.ui.plug, wazuhcluster.metrics.plug, prometheus_client"
	@build/wheel-check/venv/bin/python -c "from wazuhcluster.config import default_cluster_json as d; assert d()['files']"
	@echo "wheel-check: twistd wazuhcluster and console scripts work from a fresh venv"

# The status page test (tests/integration/test_ui_processes.py) loads /ui in headless Chromium:
# install it from the OS packages when it is missing and we may (root); the test fails with a
# clear message when it still is not there.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	  echo "Installing chromium (apt-get) for the status page test..."; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    > /tmp/wazuhcluster-chromium-install.log 2>&1 || \
	  { DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    > /tmp/wazuhcluster-chromium-install.log 2>&1; } || \
	  echo "chromium could not be installed: see /tmp/wazuhcluster-chromium-install.log"; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/all.py

clean:
	rm -rf $(VENV) demo _trial_temp* build *.egg-info
