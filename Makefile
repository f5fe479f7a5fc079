# One command sets up and runs the main job, one sets up and runs the tests.
#   make run PHOTOS=path/to/photos      (WORK=facerec-work by default)
#   make test                           (BROWSER=1: also install chromium for the browser test)
#   make serve                          (the browser UI on WORK; PHOTOS to show source photos)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PHOTOS ?= raw
WORK   ?= facerec-work
RUN_ARGS ?=
PYTEST_ARGS ?=
# the browser test of facerec serve needs Debian's chromium + chromium-driver (~500 packages):
# installed by `make test` only in CI or when asked (BROWSER=1), and only as root with apt-get
BROWSER ?= $(if $(CI),1,)

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

# SkyPilot (the `cloud` extra) for the tests of `facerec launch`, which check its task with sky's
# own parser. A separate install: in one resolve with `.[all,test]` pip backtracks for long over
# click (SkyPilot pins click<8.2, huggingface-hub wants >=8.4 for its own CLI only, unused here).
$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet "skypilot"
	touch $@

run: venv
	$(VENV)/bin/facerec run "$(PHOTOS)" --out "$(WORK)" $(RUN_ARGS)

# facerec serve's browser test drives Debian's chromium. Installed only in CI or with BROWSER=1
# (as root, with apt-get), and said in one line; otherwise that one test skips and says how.
browser:
	@if command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ -z "$(BROWSER)" ]; then \
		echo "make: no chromium here: the browser test of facerec serve will skip (make test BROWSER=1 installs Debian's chromium and chromium-driver, about 500 packages, as root)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Debian's chromium and chromium-driver for the browser test of facerec serve (BROWSER=1 or CI; about 500 packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "make: BROWSER=1 needs root and apt-get to install chromium: the browser test will skip"; \
	fi

test: venv $(VENV)/.test-installed browser
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
	$(PY) bench/ray_engine.py

clean:
	rm -rf $(VENV) .pytest_cache
