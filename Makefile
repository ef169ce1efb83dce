PYTHON ?= python3
DEMO_DIR ?= .cache/demo-small
# Everything installs into the active virtual environment, or else into the project's own
# .venv (created on first use): Debian's system Python refuses `pip install` (PEP 668).
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# CI installs every extra that runs without a GPU (tensorrt needs CUDA; see README).
TEST_EXTRAS ?= test,livekit,pipecat

.PHONY: install install-test system-deps demo offline-demo test bench bench-stream

$(PY):
	bash scripts/make-venv.sh "$(PYTHON)" "$(VENV)"

install: $(PY)
	$(PY) -m pip install -q -e .

install-test: $(PY)
	$(PY) -m pip install -q -e '.[$(TEST_EXTRAS)]'

system-deps:
	bash scripts/install-system-deps.sh

# The main job: the WebRTC avatar server on the embedded demo weights (small model,
# recipe weights written to ~/.cache/float-rt on first start).  Open http://127.0.0.1:8080/
demo: install
	$(BIN)/float-rt serve --demo

# Offline generation: recipe weights of the small model, real speech from espeak-ng, a real portrait.
offline-demo: install system-deps
	$(BIN)/float-rt demo-weights --config small --out $(DEMO_DIR)
	espeak-ng -w $(DEMO_DIR)/speech.wav "Hello! I am FLOAT R T, a talking avatar."
	$(BIN)/float-rt generate --checkpoints $(DEMO_DIR) --config small \
	    --ref client_demo/avatars/astronaut.jpg --audio $(DEMO_DIR)/speech.wav --out out/demo.mp4

test: install-test system-deps
	$(PY) -m pytest -q

bench: install
	$(BIN)/float-rt demo-weights --config float-512 --out .cache/recipe-512
	$(BIN)/float-rt bench --config float-512 --checkpoints .cache/recipe-512 --json out/bench-512.json

bench-stream: install system-deps
	$(BIN)/float-rt demo-weights --config small --out $(DEMO_DIR)
	espeak-ng -w $(DEMO_DIR)/speech.wav "Hello there. I am a talking avatar, and this is real speech for the benchmark."
	$(BIN)/float-rt bench-stream --config small --checkpoints $(DEMO_DIR) --ref client_demo/avatars/astronaut.jpg \
	    --audio $(DEMO_DIR)/speech.wav --json out/bench-stream-small.json --plot out/stream-latency-small.png
