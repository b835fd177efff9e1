# make demo: set up .venv and run the main job on ../shared data.  make test: set up and run every test.
# Two environments (NOTES.md, 'Test environments'): .venv = local CPU torch 2.13.0 + radlens[test,hf,cxr-foundation];
# .venv-zoo = torch 2.14.1 + torchvision 0.29.1 + radlens[test,zoo], for the torchvision-based encoder libraries
# (timm, open_clip, torchxrayvision), whose tests carry the zoo_vision marker.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ZOO := .venv-zoo
ZPY := $(ZOO)/bin/python
SHARED ?= ../shared/data
NIH := $(SHARED)/nih-cxr14
DEMO := runs/demo

.PHONY: demo test test-main test-zoo venv venv-zoo bench clean

# The local CPU wheel first, so that nothing later resolves torch to a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,hf,cxr-foundation,ray]"
	touch $@

venv: $(VENV)/.installed

# torchvision does not import beside torch 2.13.0; torch 2.14.1 + torchvision 0.29.1 lie on disk (5.6 GB venv).
$(ZOO)/.installed: pyproject.toml
	$(PYTHON) -m venv $(ZOO)
	$(ZPY) -m pip install -q --upgrade pip
	$(ZPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(ZPY) -m pip install -q -e ".[test,zoo]"
	touch $@

venv-zoo: $(ZOO)/.installed

demo: venv
	@test -d $(NIH) || { echo "NIH data not found at $(NIH); set SHARED=/path/to/data"; exit 1; }
	$(VENV)/bin/radlens embed $(NIH) --out $(DEMO)/store
	$(VENV)/bin/radlens info $(DEMO)/store
	$(VENV)/bin/radlens compare $(DEMO)/store --split nih-cxr14:eval --task nih-findings --task nih-single \
		--jobs 2 --out $(DEMO)

test: test-main test-zoo

test-main: venv
	$(PY) -m pytest -q

test-zoo: venv-zoo
	$(ZPY) -m pytest -q -m zoo_vision

bench: venv
	$(PY) bench/embed_throughput.py
	$(PY) bench/adapter_grid.py
	$(PY) bench/search.py
	$(PY) bench/service_load.py
	$(PY) bench/segment.py
	$(PY) bench/synth_masks.py
	$(PY) bench/synth.py
	$(PY) bench/embed_ray.py

clean:
	rm -rf $(VENV) $(ZOO) runs .pytest_cache
