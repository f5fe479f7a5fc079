# One command sets up and runs the main job, one sets up and runs the tests.
#   make run PHOTOS=path/to/photos      (WORK=facerec-work by default)
#   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PHOTOS ?= raw
WORK   ?= facerec-work
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv run test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# facenet-pytorch is a test/bench reference only (parity of our MTCNN); its metadata pins
	# an old torch, so it is installed without its dependencies. Never a runtime dependency.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch
	touch $@

run: venv
	$(VENV)/bin/facerec run "$(PHOTOS)" --work "$(WORK)" $(RUN_ARGS)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	$(PY) bench/detection.py
	$(PY) bench/annotate.py
	$(PY) bench/recognition.py
	$(PY) bench/pipeline.py
	$(PY) bench/predict_lfw.py

clean:
	rm -rf $(VENV) .pytest_cache
