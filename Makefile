# The version (VERSION file) and the operator's image reference. `make image` builds the image
# under this name without Docker; `make docker-build` builds the same with a Docker engine.
VERSION ?= $(shell cat VERSION)
IMG ?= ghcr.io/mlflow-token-operator/mlflow-token-operator:v$(VERSION)

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)

export GOFLAGS ?= -buildvcs=false

.PHONY: all
all: build

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests (and copy them into the Helm chart).
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases
	$(MAKE) -s helm-sync

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when generated files are stale.
	@git diff --exit-code -- config api charts || { echo "Generated files are stale: run 'make manifests generate' and commit."; exit 1; }
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt would change:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

.PHONY: envtest
envtest: ## Build etcd and kube-apiserver for envtest into bin/k8s (cached).
	hack/build-envtest.sh

.PHONY: keycloak
keycloak: ## Fetch Keycloak from Maven Central into bin/ (cached).
	hack/keycloak.sh install

.PHONY: test
test: ## Run the whole test suite, tier by tier, fastest first; stops at the first failing tier (hack/test.sh).
	hack/test.sh all

.PHONY: test-unit
test-unit: ## Unit tests and controller scenarios: go test ./... at the root (no servers, no root; under a minute).
	hack/test.sh unit

.PHONY: test-servers
test-servers: ## The test module against a real API server and Keycloak (integration, tenancy, faults, packaging, release).
	hack/test.sh servers

.PHONY: test-mlflow
test-mlflow: ## The end-to-end suite against a real MLflow behind mlflow-oidc-auth, and the Python plugin.
	hack/test.sh mlflow

.PHONY: test-node
test-node: ## A real kubelet node (root): the node suite, the operator from its chart and image, the image tests.
	hack/test.sh node

.PHONY: run-local
run-local: ## A local node, the operator from its chart, Keycloak, a token and a pod printing each rotation (ARGS="-duration 60s", -envtest). Ctrl-C cleans up.
	hack/run-local.sh $(ARGS)

##@ Build

.PHONY: build
build: manifests generate ## Build the manager binary.
	go build -tags=grpcnotrace -o bin/manager ./cmd

.PHONY: run
run: manifests generate ## Run the controller against the cluster in ~/.kube/config.
	go run ./cmd

.PHONY: image
image: ## Build the operator image (linux/amd64 + linux/arm64, OCI index) into bin/images/operator.tar, without Docker (cached).
	VERSION=$(VERSION) IMG=$(IMG) hack/images.sh operator

.PHONY: images
images: ## Build all images into bin/images/: operator.tar, pause.tar, training-job.tar (the last needs root) (cached).
	VERSION=$(VERSION) IMG=$(IMG) hack/images.sh all

.PHONY: test-images
test-images: ## Build all images, then test them (reproducible digest, contents, registry push/pull, ctr import, docker load; needs root).
	VERSION=$(VERSION) IMG=$(IMG) hack/images.sh all
	cd hack/tools/image && GOWORK=off go test -count=1 -timeout 30m ./... $(ARGS)

.PHONY: docker-build
docker-build: ## Build the container image with a Docker engine (the same image as `make image`, one platform).
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) -t $(IMG) .

.PHONY: docker-build-stage
docker-build-stage: ## Run the Dockerfile's build-stage command without Docker (static binary).
	CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -tags=grpcnotrace -ldflags="-s -w" -o bin/manager-static ./cmd

##@ Packaging

TOOLS_BIN ?= $(LOCALBIN)/tools
KUSTOMIZE ?= $(TOOLS_BIN)/kustomize
HELM ?= $(TOOLS_BIN)/helm
DIST ?= dist
CHART ?= charts/mlflow-token-operator

.PHONY: build-installer
build-installer: kustomize ## Render dist/install.yaml (CRD, RBAC, Deployment, metrics Service) for image IMG, a tag or a digest (DIST= to change the folder).
	@mkdir -p $(DIST) $(LOCALBIN)/installer
	@# IMG is name:tag, or name@sha256:... (make release pins the image by digest; a tag beside the
	@# digest is dropped, as the kubelet would ignore it). The Deployment and its pods are labelled
	@# app.kubernetes.io/version=v$(VERSION), as the chart does: `kubectl mlflow-token version`
	@# reads it, and an image pinned by digest has no tag to tell the version by.
	@img='$(IMG)'; name="$${img%%@*}"; \
		case "$$img" in *@*) pin="digest: $${img#*@}";; *) pin="newTag: latest";; esac; \
		case "$${name##*/}" in *:*) [ "$$name" = "$$img" ] && pin="newTag: $${name##*:}"; name="$${name%:*}";; esac; \
		printf 'resources:\n- ../../config/default\nimages:\n- name: ghcr.io/mlflow-token-operator/mlflow-token-operator\n  newName: %s\n  %s\n' "$$name" "$$pin" > $(LOCALBIN)/installer/kustomization.yaml; \
		printf 'patches:\n- target: {kind: Deployment}\n  patch: |-\n    - {op: add, path: /metadata/labels/app.kubernetes.io~1version, value: "v%s"}\n    - {op: add, path: /spec/template/metadata/labels/app.kubernetes.io~1version, value: "v%s"}\n' '$(VERSION)' '$(VERSION)' >> $(LOCALBIN)/installer/kustomization.yaml
	$(KUSTOMIZE) build $(LOCALBIN)/installer > $(DIST)/install.yaml
	@echo "Wrote $(DIST)/install.yaml"

.PHONY: release
release: ## Build the release of VERSION into DIST (dist/): image tarball, install.yaml and chart pinned by its digest, kubectl plugin archives, Python wheel and sdist, Krew manifest, SHA256SUMS.
	VERSION=$(VERSION) IMG=$(IMG) DIST=$(DIST) hack/release.sh

.PHONY: helm-sync
helm-sync: ## Copy the generated CRDs and RBAC role, the alerts and the dashboard into the Helm chart (a test fails when they differ).
	rm -f $(CHART)/files/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/files/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/prometheus/rules.yaml $(CHART)/files/prometheus-rules.yaml
	cp config/grafana/mlflow-token-operator.json $(CHART)/files/grafana-dashboard.json

.PHONY: helm-docs
helm-docs: ## Regenerate the values table of the chart's README from values.yaml (a test fails when it is stale).
	go run ./hack/chartdoc $(CHART)

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart.
	$(HELM) lint --strict $(CHART)

.PHONY: docs-check
docs-check: ## Check the docs against the repository: kubectl resource names, chart values, flags, links, Mermaid diagrams (needs Node.js).
	hack/mermaid-check.sh
	go -C test test -count=1 -run 'Docs|Troubleshooting' ./packaging/

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)
	ln -sf $(notdir $(CONTROLLER_GEN)) $(LOCALBIN)/controller-gen

.PHONY: kustomize
kustomize: ## Build kustomize from the pinned Go module (hack/tools/kustomize) into bin/tools (cached).
	hack/packaging-tools.sh

.PHONY: helm
helm: ## Build Helm from the pinned Go module (hack/tools/helm) into bin/tools (cached).
	hack/packaging-tools.sh

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

.PHONY: fuzz
fuzz: ## Run each fuzz test for FUZZTIME (default 30s); seeds are in the tests, and run by `make test` too.
	go test ./internal/jwtclaims -run XXX -fuzz FuzzParse -fuzztime $(or $(FUZZTIME),30s)
	go test ./internal/keycloak -run XXX -fuzz FuzzTokenResponse -fuzztime $(or $(FUZZTIME),30s)
	go test ./internal/policy -run XXX -fuzz FuzzRenewalTime -fuzztime $(or $(FUZZTIME),30s)
	go test ./internal/tokensecret -run XXX -fuzz FuzzRead -fuzztime $(or $(FUZZTIME),30s)

##@ Fault tests (issue 4)

.PHONY: test-faults-long
test-faults-long: ## Long fault runs (150-resource outage of 60 s, 100 resources x 20 SIGKILLs, 3 failovers, ...): see docs/reliability.md.
	hack/build-envtest.sh | tail -n 1
	hack/keycloak.sh install | tail -n 1
	KUBEBUILDER_ASSETS="$(LOCALBIN)/k8s" KEYCLOAK_HOME="$$(hack/keycloak.sh home)" FAULT_LONG=1 \
		go -C test test -count=1 -v -timeout 60m ./fault/ $(ARGS)

##@ Benchmarks (issue 7)

.PHONY: bench
bench: ## Full benchmark against the real API server and Keycloak (~30 min): rewrites docs/benchmarks.md and docs/benchmarks/*.png (BENCH_ARGS= for knobs).
	hack/build-envtest.sh | tail -n 1
	hack/keycloak.sh install | tail -n 1
	cd test/bench && go build -o $(LOCALBIN)/bench .
	KUBEBUILDER_ASSETS="$(LOCALBIN)/k8s" KEYCLOAK_HOME="$$(hack/keycloak.sh home)" $(LOCALBIN)/bench -root . $(BENCH_ARGS)

.PHONY: bench-smoke
bench-smoke: ## Quick benchmark (N=50, one-minute steady state, ~5 min): writes bin/bench-smoke/.
	hack/build-envtest.sh | tail -n 1
	hack/keycloak.sh install | tail -n 1
	cd test/bench && go build -o $(LOCALBIN)/bench .
	KUBEBUILDER_ASSETS="$(LOCALBIN)/k8s" KEYCLOAK_HOME="$$(hack/keycloak.sh home)" $(LOCALBIN)/bench -root . -smoke $(BENCH_ARGS)

.PHONY: bench-neighbours
bench-neighbours: ## Noisy neighbours and cache flood against the real API server and Keycloak (~8 min): ARGS="-operator BIN -label before" measures another binary.
	hack/build-envtest.sh | tail -n 1
	hack/keycloak.sh install | tail -n 1
	KUBEBUILDER_ASSETS="$(LOCALBIN)/k8s" KEYCLOAK_HOME="$$(hack/keycloak.sh home)" go -C test run ./neighbours $(ARGS)
