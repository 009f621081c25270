#!/usr/bin/env bash
# The whole test suite: unit tests, the real API server (envtest) and a real Keycloak.
# Builds or fetches what it needs into bin/ (cached: the second run starts at once).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
echo "==> envtest binaries (etcd, kube-apiserver)"
hack/build-envtest.sh | tail -n 3
echo "==> Keycloak"
hack/keycloak.sh install | tail -n 2
export KUBEBUILDER_ASSETS="$PWD/bin/k8s"
export KEYCLOAK_HOME
KEYCLOAK_HOME="$(hack/keycloak.sh home)"

# --- issue 6: MLflow venv for test/e2e (block owned by the e2e/plugin work) ---------------------
# bin/venv-mlflow: pinned mlflow + mlflow-oidc-auth (test/e2e/requirements.txt), the token-file
# plugin (clients/python) and pytest. Cached by a stamp: instant when nothing changed. test/e2e
# fails without MLFLOW_VENV and also runs the plugin's pytest suite.
echo "==> MLflow venv (mlflow, mlflow-oidc-auth, clients/python)"
hack/mlflow-venv.sh | tail -n 2
export MLFLOW_VENV
MLFLOW_VENV="$(hack/mlflow-venv.sh path)"
# --- end of issue 6 block ----------------------------------------------------------------------

# --- issue 5: packaging tools for test/packaging (block owned by the packaging work) ------------
# bin/tools/{kustomize,helm,promql-check,argocd-lua}, built from Go modules pinned under
# hack/tools/ (kustomize v5.8.2, helm v3.22.0, Prometheus' PromQL parser v0.316.0, gopher-lua
# v1.1.2). Cached by per-tool stamps: instant when nothing changed. test/packaging fails without them.
echo "==> packaging tools (kustomize, helm, promql-check, argocd-lua)"
hack/packaging-tools.sh | tail -n 5
# --- end of issue 5 block ----------------------------------------------------------------------

# --- docs: Mermaid's parser for test/packaging's TestDocsMermaid (block owned by the docs work) --
# bin/mermaid-check: mermaid and jsdom from hack/mermaid-check/package-lock.json (npm ci), run by
# Node.js to parse the docs' diagrams as the forge does. Cached by a stamp: instant when nothing
# changed. TestDocsMermaid fails without it.
echo "==> Mermaid parser (bin/mermaid-check)"
hack/mermaid-check.sh | tail -n 1
# --- end of the docs block ---------------------------------------------------------------------

# --- A real cluster: the single-node suite test/node (block owned by the node work) ------------
# bin/k8s/{kubelet,kube-controller-manager,kube-scheduler,kube-proxy}, built from the same pinned
# k8s.io/kubernetes as envtest (stamp bin/k8s/.stamp-node: instant when nothing changed; cold about
# 7 minutes on 2 cores once etcd and kube-apiserver are built). test/node also needs root and the
# Debian packages containerd, runc, containernetworking-plugins and iptables: it fails in one line
# naming what is missing.
echo "==> node binaries (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, coredns)"
hack/build-envtest.sh node   # not tailed: a cold build prints its progress every minute
# --- end of the node block ---------------------------------------------------------------------

# --- images: bin/images/{operator,pause,training-job}.tar (hack/images.sh, hack/tools/image) ---
# Cached by stamps (instant when nothing changed); cold: the operator 3-9 min (two platforms),
# training-job 2-4 min (debootstrap, pip; root). Not tailed: it prints progress every 30 s.
# test/node uses bin/images/pause.tar; the cluster suites use all three.
echo "==> images (operator, pause, training-job)"
hack/images.sh all
# --- end of the images block -------------------------------------------------------------------

# --- release: tools for test/release (block owned by the release work) -------------------------
# bin/venv-release (Python build tools pinned with hashes: hack/release-requirements.txt) and the
# Go modules of the operator, the plugin and the image builder; helm and kustomize come from the
# packaging block. Cached by a stamp: instant when nothing changed. test/release builds a release
# of a made-up version into a temporary folder without any network (about 30 s warm; with a cold
# build cache the plugin's darwin builds add several minutes) and fails without these.
echo "==> release tools (bin/venv-release, Go modules)"
hack/release.sh tools | tail -n 1
# --- end of the release block ------------------------------------------------------------------

echo "==> go vet"
go vet ./...

echo "==> go test"
# One package at a time: several packages each start their own API server and Keycloak (and
# test/e2e an MLflow server); on a 2-core machine running them side by side only makes each slower
# and their timing noisier. The packages without servers take seconds anyway.
go test -p 1 -count=1 -timeout 60m $(go list ./... | grep -v -e '/test/node$' -e '/test/cluster$' -e '/test/csi$') "$@"
# Verbose, so that its figures print (node start time, Secret volume propagation, nudged
# delivery); about 4-5 min.
echo "==> the single-node suite (test/node)"
go test -count=1 -timeout 20m -v ./test/node/ "$@" | grep -vE '^=== (RUN|PAUSE|CONT)'
# The operator from its image and chart on a node (and from dist/install.yaml): install, token,
# helm test, upgrade, failovers, training jobs in pods, uninstall. Verbose for its step times and
# figures (printed again together at the end); about 6 min.
echo "==> the operator on a real node (test/cluster)"
go test -count=1 -timeout 30m -v ./test/cluster/ "$@" | grep -vE '^=== (RUN|PAUSE|CONT)'
# --- issue 19: the CSI driver of per-pod tokens on a real node (block owned by the CSI work) -----
# test/csi: the chart with csiDriver.enabled from the operator's image, Keycloak trusting the
# node's API server as service-account issuer, MLflow behind mlflow-oidc-auth; a training Job,
# identities and refusals, 100+ rotations measured, revocation, the plugin killed and taken down,
# the API server searched for tokens. It also needs the tokenwatch image (the readers). Verbose
# for its figures (printed again together at the end); about 8 min.
echo "==> the CSI driver on a real node (test/csi)"
hack/images.sh tokenwatch | tail -n 1
go test -count=1 -timeout 30m -v ./test/csi/ "$@" | grep -vE '^=== (RUN|PAUSE|CONT)'
# --- end of issue 19 block ---------------------------------------------------------------------
echo "==> image tests (hack/tools/image: its own module, which ./... skips)"
(cd hack/tools/image && GOWORK=off go test -count=1 -timeout 30m ./...)
echo "==> all tests passed in $(( $(date +%s) - start ))s"
