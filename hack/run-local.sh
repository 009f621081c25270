#!/usr/bin/env bash
# `make run-local`: the operator's main job on this machine alone, as its users will see it. A real
# single-node Kubernetes cluster (test/node), the operator installed by its Helm chart from the
# image built here, a local Keycloak, a ClusterKeycloakIssuer and an MLflowAccessToken, and a pod
# that mounts the token's Secret and prints each new token (a fingerprint) as it arrives. Ctrl-C
# deletes the resource (the operator revokes the token), uninstalls the chart and removes
# everything. Extra arguments go to test/localdemo (e.g. -duration 60s; -envtest).
#
# Where no node can run (not Linux, not root, Debian packages missing) it says why in one line
# and runs the envtest mode instead: a local API server and the operator binary on the host.
#
# Everything it builds is cached (stamps under bin/): the first run took 10 min 23 s on
# 2 cores from empty caches (Kubernetes' binaries dominate), later runs start in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
export RUN_LOCAL_STARTED="${started}" # test/localdemo counts from here
step() { echo "==> [$(( $(date +%s) - started ))s] $*"; }

# shellcheck source=hack/lib.sh
source hack/lib.sh
indent() { echo "  $*"; }

# without PREFIX: copies its input line by line, except lines starting with PREFIX (the
# machine-readable last lines of the build scripts).
without() {
  local line
  while IFS= read -r line; do
    [[ "${line}" == "$1"* ]] || printf '%s\n' "${line}"
  done
}

# Static and path-free, like Kubernetes' binaries, helm and the operator image: all share one
# Go build cache, so whichever builds first compiles client-go for the others.
go_build() { CGO_ENABLED=0 go build -trimpath -buildvcs=false "$@"; }
# The demo program is part of the test module (test/go.mod): it runs the test harnesses' node.
go_build_test() { (cd test && CGO_ENABLED=0 go build -trimpath -buildvcs=false "$@"); }

step "building the demo program (test/localdemo; first run: a few minutes)"
ticking indent "building test/localdemo" go_build_test -o ../bin/localdemo ./localdemo

mode=node
for arg in "$@"; do
  if [[ "${arg}" == -envtest || "${arg}" == --envtest ]]; then mode=envtest; fi
done
if [[ "${mode}" == envtest ]]; then
  echo "run-local: envtest mode (-envtest): running the operator on the host against a local API server"
elif ! reason="$(bin/localdemo -preflight)"; then
  mode=envtest
  echo "run-local: no real node here (${reason}): running the operator on the host against a local API server instead"
fi

step "etcd and kube-apiserver (hack/build-envtest.sh; first run: about 4 min on 2 cores, more on a busy machine)"
hack/build-envtest.sh | without KUBEBUILDER_ASSETS=
if [[ "${mode}" == node ]]; then
  step "kubelet, controller-manager, scheduler, kube-proxy (hack/build-envtest.sh node; first run: about 3 min on 2 cores, more on a busy machine)"
  hack/build-envtest.sh node | without KUBEBUILDER_ASSETS=
fi
step "Keycloak 26.7.3 (hack/keycloak.sh install, from Maven Central; first run: about a minute)"
ticking indent "fetching or preparing Keycloak" hack/keycloak.sh install | without KEYCLOAK_
export KUBEBUILDER_ASSETS="${PWD}/bin/k8s"
KEYCLOAK_HOME="$(hack/keycloak.sh home)"
export KEYCLOAK_HOME

if [[ "${mode}" == envtest ]]; then
  step "the operator binary (bin/manager)"
  ticking indent "building ./cmd" go_build -o bin/manager ./cmd
  step "starting (Ctrl-C stops and cleans up)"
  exec bin/localdemo -envtest "$@"
fi

step "helm (hack/packaging-tools.sh helm; first run: about a minute)"
hack/packaging-tools.sh helm | without PACKAGING_TOOLS=
# This machine's platform only: the two-platform image of `make image` takes twice as long to
# build cold, and a node here runs one. An operator.tar with both platforms is used as it is.
step "images: operator (linux/$(go env GOARCH)), pause, tokenwatch (hack/images.sh; first run: about a minute)"
PLATFORMS="linux/$(go env GOARCH)" hack/images.sh operator pause tokenwatch
step "starting (Ctrl-C stops and cleans up)"
exec bin/localdemo "$@"
