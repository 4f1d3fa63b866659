# Two entry points for a fresh machine with Python 3.11 and make: `make demo`, `make test`.
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

test: $(STAMP)
	WAZUHCLUSTER_HYPOTHESIS_PROFILE=$${WAZUHCLUSTER_HYPOTHESIS_PROFILE:-ci} \
	  $(BIN)/python -W error::DeprecationWarning -m twisted.trial -j2 tests

bench: $(STAMP)
	$(BIN)/python bench/codec.py

clean:
	rm -rf $(VENV) demo _trial_temp* build *.egg-info
