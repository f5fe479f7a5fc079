# One command sets up and runs the main job, one sets up and runs the tests.
#   make run PHOTOS=path/to/photos      (WORK=facerec-work by default)
#   make test
#   make serve                          (the browser UI on WORK; PHOTOS to show source photos)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PHOTOS ?= raw
WORK   ?= facerec-work
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv run test bench clean browser serve

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,test]"
	# facenet-pytorch is a test/bench reference only (parity of our MTCNN); its metadata pins
	# an old torch, so it is installed without its dependencies. Never a runtime dependency.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch
	touch $@

run: venv
	$(VENV)/bin/facerec run "$(PHOTOS)" --work "$(WORK)" $(RUN_ARGS)

# facerec serve's browser test drives Debian's chromium; install it when missing and apt can
# (root). Elsewhere that one test skips and says why.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: venv browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

serve: venv
	$(VENV)/bin/facerec serve "$(WORK)" $(if $(wildcard $(PHOTOS)),--photos "$(PHOTOS)")

bench: venv
	$(PY) bench/detection.py
	$(PY) bench/annotate.py
	$(PY) bench/recognition.py
	$(PY) bench/pipeline.py
	$(PY) bench/predict_lfw.py
	$(PY) bench/embedding.py
	$(PY) bench/enroll_lfw.py
	$(PY) bench/verify_lfw.py
	$(PY) bench/video_fps.py
	$(PY) bench/serve.py
	$(PY) bench/serve_memory.py

clean:
	rm -rf $(VENV) .pytest_cache
