# Two targets for a fresh clone; each sets up .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dgml-installed

.PHONY: app test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

app: $(STAMP)
	$(VENV)/bin/streamlit run app/main.py --server.address 127.0.0.1 --server.headless true

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
