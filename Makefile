# The README's commands. Everything runs from a virtual environment in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL ?= models/demand/1
HOST ?= 127.0.0.1
PORT ?= 8000
# where `make serve` keeps its sessions across a restart (LSTM_STATE_DIR, when set, wins)
STATE_DIR ?= .state
TEST_PROCS ?= 2

.PHONY: setup setup-serve tools serve model verify console-png test test-workers lint format bench bench-full bench-peers bench-layers clean image image-test compose-test image-cuda

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# runtime only: what `make serve` needs
$(VENV)/.serve: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e .
	touch $@

# runtime + training + tests
$(VENV)/.dev: pyproject.toml client/pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e '.[train,dev]' -e ./client
	touch $@ $(VENV)/.serve

setup-serve: $(VENV)/.serve
setup: $(VENV)/.dev

# system tools the tests start for real (redis-server, promtool, ...): installed when missing
tools:
	bash scripts/install-tools.sh

serve: $(VENV)/.serve
	LSTM_STATE_DIR="$${LSTM_STATE_DIR:-$(STATE_DIR)}" exec $(PY) -m service --host $(HOST) --port $(PORT)

model: $(VENV)/.dev
	$(PY) -m export.train
	$(PY) -m export.verify $(MODEL)

# docs/console.png: the console after its demo, in Chromium against a live server (the browser test takes it)
console-png: $(VENV)/.dev tools
	LSTM_CONSOLE_SCREENSHOT=$(abspath docs/console.png) $(PY) -m pytest -q -p no:cacheprovider \
		tests/service/test_console.py::test_console_page_in_chromium

verify: $(VENV)/.dev
	$(PY) -m export.verify $(MODEL)

# pytest exits 5 when it collected no test: that is a failure here, never a pass
# two test processes (pytest-xdist, a file's tests in one process): most tests wait on servers
test: $(VENV)/.dev tools
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q -n $(TEST_PROCS) --dist loadfile

# the end-to-end tests of exactness, ordering, retries, failover, drain and fuzzing again, every
# server a supervisor with 2 worker processes over Redis (harness/server.py); CI runs it too
WORKER_TESTS ?= $(addprefix tests/service/,test_workers.py test_http_sessions.py test_v2_protocol.py test_replicas.py test_shutdown.py test_fuzz.py) tests/client/test_faults.py
test-workers: $(VENV)/.dev tools
	LSTM_TEST_WORKERS=2 PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q $(WORKER_TESTS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check service export tests bench harness client
	$(VENV)/bin/ruff format --check service export tests bench harness client
	$(VENV)/bin/mypy service export
	$(VENV)/bin/mypy --strict client/lstm_serving_client

format: $(VENV)/.dev
	$(VENV)/bin/ruff format service export tests bench harness client
	$(VENV)/bin/ruff check --fix service export tests bench harness client

# the CPU image with podman (scripts/images.sh: a local Debian base when no registry answers;
# `docker build -f deploy/Dockerfile .` is the way for users with Docker), then its tests:
# hardened run, health, exact streams, HEALTHCHECK, SIGTERM. compose-test: two replicas and
# Redis under podman-compose, one replica killed mid-stream.
IMAGE ?= lstm-serving:0.1.0
image:
	bash scripts/tools/containers.sh
	IMAGE=$(IMAGE) scripts/images.sh build cpu

image-test: image $(VENV)/.dev
	IMAGE=$(IMAGE) $(PY) -m pytest -q -m containers tests/containers/test_image.py

# the CUDA image (where no CUDA base can be pulled, the Debian base stands in: see docs/deployment.md)
image-cuda:
	scripts/images.sh build cuda

compose-test: image $(VENV)/.dev
	scripts/images.sh build redis
	IMAGE=$(IMAGE) $(PY) -m pytest -q -m containers tests/containers/test_compose.py

# benchmarks write docs/benchmarks.md and docs/bench/*.png (quick: under 5 minutes)
bench: $(VENV)/.dev
	$(PY) -m bench.run --quick

bench-full: $(VENV)/.dev
	$(PY) -m bench.run --full

# peers in one run: Triton Inference Server (built into .tools/triton by bench/triton/setup.sh),
# the naive server, this service with 1 and 2 workers; writes the peer section of docs/benchmarks.md
bench-peers: $(VENV)/.dev tools
	bash bench/triton/setup.sh
	$(PY) -m bench.peers

bench-layers: $(VENV)/.dev
	$(PY) -m bench.layers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
