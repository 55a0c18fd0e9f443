# The README's commands. Everything runs from a virtual environment in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL ?= models/demand/1
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup setup-serve tools serve model verify test lint format bench bench-full clean image image-test compose-test image-cuda

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
	$(PY) -m service --host $(HOST) --port $(PORT)

model: $(VENV)/.dev
	$(PY) -m export.train
	$(PY) -m export.verify $(MODEL)

verify: $(VENV)/.dev
	$(PY) -m export.verify $(MODEL)

# pytest exits 5 when it collected no test: that is a failure here, never a pass
test: $(VENV)/.dev tools
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
