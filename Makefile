# patchwarden — developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# NODE=kwok (default): kwok fakes the node. NODE=real: a real kubelet, containerd
# and CSI hostpath on this machine (root; hack/node/deps.sh installs its packages).
NODE ?= kwok
DEVCLUSTER := $(BIN)/python -m patchwarden_dev.devcluster --node $(NODE)
NODE_DEPS := $(if $(filter real,$(NODE)),hack/node/deps.sh,true)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# The dev tooling (operator/patchwarden_dev: dev clusters, demo) is not in the wheel;
	@# the venv imports it from the source tree.
	@echo "$(CURDIR)/operator" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/patchwarden-dev.pth"
	@rm -f $(VENV)/.installed-*; touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with patchwarden and its dev tools

.PHONY: tools-path
tools-path: ## print the directory of kubectl, helm, kwok, kube-apiserver, etcd … (builds them once)
	@hack/tools.sh

.PHONY: crds
crds: $(STAMP) ## regenerate crds/ from the pydantic models
	$(BIN)/python -m patchwarden.api.crd crds charts/patchwarden/crds

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict and the import contracts (layers)
	$(BIN)/lint-imports
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy --strict

.PHONY: fmt
fmt: $(STAMP) ## format and fix what ruff can
	$(BIN)/ruff format operator tests
	$(BIN)/ruff check --fix operator tests

.PHONY: test
test: lint ## lint, type check, unit, cluster and real-node tests (brings up both local clusters)
	@hack/node/deps.sh || [[ "$${CI:-}" != true ]] # elsewhere the node tests skip, saying why
	hack/tools.sh node >/dev/null
	$(BIN)/pytest

.PHONY: chaos
chaos: $(STAMP) ## crash the operator at every write of four scenarios, on the local cluster (bench/results-chaos.json)
	PATCHWARDEN_CHAOS=all $(BIN)/pytest tests/cluster/test_crash_anywhere.py -q -s

.PHONY: test-unit
test-unit: $(STAMP) ## only the tests that need no cluster
	$(BIN)/pytest tests/unit

.PHONY: cluster-up
cluster-up: $(STAMP) ## start the local cluster (NODE=real: with a real node); prints its KUBECONFIG
	$(NODE_DEPS)
	$(DEVCLUSTER) up

.PHONY: cluster-down
cluster-down: $(STAMP) ## stop the local cluster (NODE=real: and undo the node's traces), remove its state
	$(DEVCLUSTER) down

.PHONY: run
run: $(STAMP) ## the main job: the local cluster (unless KUBECONFIG is set), the CRDs, then the operator
	@if [[ -z "$${KUBECONFIG:-}" ]]; then $(NODE_DEPS); $(DEVCLUSTER) up; fi
	@kc=$${KUBECONFIG:-$$($(DEVCLUSTER) kubeconfig)}; tools=$$(hack/tools.sh); \
	  $$tools/kubectl --kubeconfig "$$kc" apply --server-side --force-conflicts -f crds/ >/dev/null; \
	  echo "CRDs installed; starting the operator (Ctrl-C stops it). In another shell:"; \
	  echo "  export KUBECONFIG=$$kc PATH=$$tools:\$$PATH; kubectl get patchwarden -A"; \
	  KUBECONFIG="$$kc" exec $(BIN)/patchwarden run

.PHONY: demo
demo: $(STAMP) ## run examples/ for real on the local cluster (unless KUBECONFIG is set) and check the outcomes
	@if [[ -z "$${KUBECONFIG:-}" ]]; then $(NODE_DEPS); $(DEVCLUSTER) up; fi
	@kc=$${KUBECONFIG:-$$($(DEVCLUSTER) kubeconfig)}; KUBECONFIG="$$kc" $(BIN)/python -m patchwarden_dev.demo

.PHONY: bench
bench: $(STAMP) ## fleet sync + window storm on the local cluster (bench/results.json); SYSTEMS=2000 STORM=500
	$(BIN)/python bench/bench.py --systems $${SYSTEMS:-2000} --storm-systems $${STORM:-500}
