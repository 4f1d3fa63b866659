# Two entry points for a fresh machine with Python 3.11 and make: `make demo`, `make test`.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv wheel-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/wazuhcluster-demo --dir demo

test: $(STAMP) wheel-check
	set -o pipefail; WAZUHCLUSTER_HYPOTHESIS_PROFILE=$${WAZUHCLUSTER_HYPOTHESIS_PROFILE:-ci} \
	  $(BIN)/python -W error::DeprecationWarning -m twisted.trial -j2 tests 2>&1 \
	  | $(PYTHON) .ci/summary.py

# `pip install .` into a fresh virtualenv must give a working `twistd wazuhcluster` plugin
# and the console scripts (the plugin file must be packaged without twisted/__init__.py).
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w build/wheel-check . \
	  || $(BIN)/pip wheel --quiet --no-deps -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/pip install --quiet build/wheel-check/wazuhcluster-*.whl
	build/wheel-check/venv/bin/twistd --help | grep -q wazuhcluster
	build/wheel-check/venv/bin/twistd wazuhcluster --help | grep -q -- --home
	test -x build/wheel-check/venv/bin/wazuhcluster-control
	test -x build/wheel-check/venv/bin/wazuhcluster-users
	build/wheel-check/venv/bin/python -c "from wazuhcluster.api.service import SPEC_PATH; assert open(SPEC_PATH).read().startswith('openapi')"
	build/wheel-check/venv/bin/python -c "from wazuhcluster.config import default_cluster_json as d; assert d()['files']"
	@echo "wheel-check: twistd wazuhcluster and console scripts work from a fresh venv"

bench: $(STAMP)
	$(BIN)/python bench/codec.py

clean:
	rm -rf $(VENV) demo _trial_temp* build *.egg-info
