# make demo: set up .venv and run the main job on ../shared data.  make test: set up and run every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data
NIH := $(SHARED)/nih-cxr14
DEMO := runs/demo

.PHONY: demo test venv bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	@test -d $(NIH) || { echo "NIH data not found at $(NIH); set SHARED=/path/to/data"; exit 1; }
	$(VENV)/bin/radlens embed $(NIH) --out $(DEMO)/store
	$(VENV)/bin/radlens info $(DEMO)/store
	$(VENV)/bin/radlens compare $(DEMO)/store --split nih-cxr14:eval --task nih-findings --task nih-single \
		--jobs 2 --out $(DEMO)

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/embed_throughput.py
	$(PY) bench/adapter_grid.py
	$(PY) bench/search.py
	$(PY) bench/service_load.py

clean:
	rm -rf $(VENV) runs .pytest_cache
