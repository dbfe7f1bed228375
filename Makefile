# Two targets for a fresh clone; each sets up .venv when missing and installs the locked versions.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dgml-installed
LOCK := constraints.txt

.PHONY: app test install lock clean-venv

install: $(STAMP)

# Every transitive dependency is pinned by $(LOCK) (see scripts/lock.sh), so a fresh
# clone installs exactly what the tests and the shipped figures were made with.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[test]'
	touch $(STAMP)

app: $(STAMP)
	$(VENV)/bin/dgml-viz app

test: $(STAMP)
	$(PY) -m pytest

# Re-resolve every dependency from scratch and rewrite $(LOCK); commit the result.
lock:
	bash scripts/lock.sh

clean-venv:
	rm -rf $(VENV)
