PYTHON ?= python3
DEMO_DIR ?= .cache/demo-small

.PHONY: install system-deps demo offline-demo test bench bench-stream

install:
	$(PYTHON) -m pip install -q -e '.[test]'

system-deps:
	bash scripts/install-system-deps.sh

# The main job: the WebRTC avatar server on the embedded demo weights (small model,
# recipe weights written to ~/.cache/float-rt on first start).  Open http://127.0.0.1:8080/
demo: install
	float-rt serve --demo

# Offline generation: recipe weights of the small model, real speech from espeak-ng, a real portrait.
offline-demo: install system-deps
	float-rt demo-weights --config configs/small.yaml --out $(DEMO_DIR)
	espeak-ng -w $(DEMO_DIR)/speech.wav "Hello! I am FLOAT R T, a talking avatar."
	$(PYTHON) -c "import cv2, skimage.data as d; cv2.imwrite('$(DEMO_DIR)/astronaut.png', cv2.cvtColor(d.astronaut(), cv2.COLOR_RGB2BGR))"
	float-rt generate --checkpoints $(DEMO_DIR) --config configs/small.yaml \
	    --ref $(DEMO_DIR)/astronaut.png --audio $(DEMO_DIR)/speech.wav --out out/demo.mp4

test: install system-deps
	$(PYTHON) -m pytest -q

bench: install
	float-rt demo-weights --config configs/float-512.yaml --out .cache/recipe-512
	float-rt bench --config configs/float-512.yaml --checkpoints .cache/recipe-512 --json out/bench-512.json

bench-stream: install system-deps
	float-rt demo-weights --config configs/small.yaml --out $(DEMO_DIR)
	espeak-ng -w $(DEMO_DIR)/speech.wav "Hello there. I am a talking avatar, and this is real speech for the benchmark."
	float-rt bench-stream --config configs/small.yaml --checkpoints $(DEMO_DIR) --ref client_demo/avatars/astronaut.jpg \
	    --audio $(DEMO_DIR)/speech.wav --json out/bench-stream-small.json --plot out/stream-latency-small.png
