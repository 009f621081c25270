#!/usr/bin/env bash
# The test suite, in tiers that each answer one question, fastest first:
#
#   unit     go test ./... at the repository root: unit tests and the controller scenarios (an
#            in-memory API server and Keycloak, a fake clock). No server, no root; under a minute.
#   servers  the test module (test/go.mod) against a real API server (envtest) and a real
#            Keycloak: integration, issuers and service-account identities, tenancy attacks,
#            faults, uninstall, packaging and docs, release artifacts.
#   mlflow   a real MLflow behind mlflow-oidc-auth: the end-to-end suite and the Python plugin.
#   node     a real kubelet node (root; containerd, runc): the node suite, the operator from its
#            chart and image, the image tests.
#
#   hack/test.sh [unit|servers|mlflow|node|all]     (default: all; `make test` runs all)
#
# `all` runs the tiers in that order and stops at the first one that fails. Each tier builds or
# fetches what it needs into bin/ (cached: the second run starts at once) and prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."

tier_unit() {
  echo "==> go vet (the operator's module)"
  go vet ./...
  echo "==> go test ./... (unit tests and controller scenarios)"
  go test -count=1 ./...
}

# servers_env builds envtest's binaries and fetches Keycloak, and exports what the suites read.
servers_env() {
  echo "==> envtest binaries (etcd, kube-apiserver)"
  hack/build-envtest.sh | tail -n 3
  echo "==> Keycloak"
  hack/keycloak.sh install | tail -n 2
  export KUBEBUILDER_ASSETS="$PWD/bin/k8s"
  export KEYCLOAK_HOME
  KEYCLOAK_HOME="$(hack/keycloak.sh home)"
}

tier_servers() {
  servers_env
  # bin/k8s/kube-controller-manager: test/federated deletes namespaces with the real namespace
  # controller (cold: about 4 minutes on 2 cores; not tailed, so that its progress prints).
  echo "==> kube-controller-manager (the namespace controller of test/federated)"
  hack/build-envtest.sh servers
  # bin/tools/{kustomize,helm,promql-check,argocd-lua} (test/packaging, test/tenancy's chart RBAC),
  # bin/mermaid-check (the docs' diagrams), bin/venv-release (test/release): pinned, cached.
  echo "==> packaging tools (kustomize, helm, promql-check, argocd-lua)"
  hack/packaging-tools.sh | tail -n 5
  echo "==> Mermaid parser (bin/mermaid-check)"
  hack/mermaid-check.sh | tail -n 1
  echo "==> release tools (bin/venv-release, Go modules)"
  hack/release.sh tools | tail -n 1
  echo "==> go vet (the test module)"
  (cd test && go vet ./...)
  echo "==> go test (the test module, but MLflow's and the node's suites)"
  # One package at a time: each starts its own API server and Keycloak, and on 2 cores side by
  # side only makes each slower and their timing noisier. Within a package, the tests that leave
  # the servers as they found them run side by side (t.Parallel; -parallel 8: they mostly wait for
  # rotations); the ones that stop a server, restart the operator or count calls across a realm
  # run alone, first.
  (cd test && go test -p 1 -parallel 8 -count=1 -timeout 60m \
    $(go list ./... | grep -v -e '/test/e2e$' -e '/test/node$' -e '/test/cluster$' -e '/test/csi$') "$@")
}

tier_mlflow() {
  servers_env
  # bin/venv-mlflow: pinned mlflow + mlflow-oidc-auth (test/e2e/requirements.txt), the token-file
  # plugin (clients/python) and pytest. test/e2e also runs the plugin's pytest suite.
  echo "==> MLflow venv (mlflow, mlflow-oidc-auth, clients/python)"
  hack/mlflow-venv.sh | tail -n 2
  export MLFLOW_VENV
  MLFLOW_VENV="$(hack/mlflow-venv.sh path)"
  echo "==> go test ./e2e (MLflow behind mlflow-oidc-auth)"
  (cd test && go test -count=1 -parallel 8 -timeout 30m ./e2e/ "$@")
}

tier_node() {
  servers_env
  export MLFLOW_VENV
  hack/mlflow-venv.sh | tail -n 2
  MLFLOW_VENV="$(hack/mlflow-venv.sh path)"
  hack/packaging-tools.sh | tail -n 1
  # bin/k8s/{kubelet,kube-controller-manager,kube-scheduler,kube-proxy,coredns}, from the same
  # pinned k8s.io/kubernetes as envtest (cold: about 7 minutes on 2 cores); not tailed: a cold
  # build prints its progress every minute. test/node also needs root and the Debian packages
  # containerd, runc, containernetworking-plugins and iptables: it fails in one line naming what
  # is missing.
  echo "==> node binaries (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, coredns)"
  hack/build-envtest.sh node
  # bin/images/{operator,pause,training-job}.tar (cold: the operator 3-9 min, training-job 2-4 min).
  echo "==> images (operator, pause, training-job)"
  hack/images.sh all
  # Verbose, so that their figures print (node start, Secret volume propagation, nudged delivery,
  # the chart's steps).
  echo "==> the single-node suite (test/node)"
  (cd test && go test -count=1 -timeout 20m -v ./node/ "$@") | grep -vE '^=== (RUN|PAUSE|CONT)'
  echo "==> the operator on a real node (test/cluster)"
  (cd test && go test -count=1 -timeout 30m -v ./cluster/ "$@") | grep -vE '^=== (RUN|PAUSE|CONT)'
  # The CSI driver of per-pod tokens: the chart with csiDriver.enabled from the operator's image,
  # Keycloak trusting the node's API server as service-account issuer, MLflow behind
  # mlflow-oidc-auth; a training Job, identities and refusals, 100+ rotations measured,
  # revocation, the plugin killed and taken down, the API server searched for tokens. It also
  # needs the tokenwatch image (the readers). About 5 min.
  echo "==> the CSI driver on a real node (test/csi)"
  hack/images.sh tokenwatch | tail -n 1
  (cd test && go test -count=1 -timeout 30m -v ./csi/ "$@") | grep -vE '^=== (RUN|PAUSE|CONT)'
  echo "==> image tests (hack/tools/image: its own module)"
  (cd hack/tools/image && GOWORK=off go test -count=1 -timeout 30m ./...)
}

run_tier() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  echo "=== tier ${name} ==="
  "tier_${name}" "$@"
  echo "=== tier ${name} passed in $(( $(date +%s) - t0 ))s ==="
}

start=$(date +%s)
what="${1:-all}"
[[ $# -gt 0 ]] && shift
case "${what}" in
  unit|servers|mlflow|node) run_tier "${what}" "$@" ;;
  all)
    for t in unit servers mlflow node; do
      run_tier "$t" "$@"
    done
    ;;
  *) echo "usage: hack/test.sh [unit|servers|mlflow|node|all]" >&2; exit 2 ;;
esac
echo "==> ${what}: passed in $(( $(date +%s) - start ))s"
