#!/usr/bin/env bash
# The operator's main job on this machine alone: a local API server, a local Keycloak, the
# operator and the sample resource, with the Secret rotating every few seconds. Ctrl-C cleans up.
# Extra arguments go to hack/localdemo (e.g. -duration 60s).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/build-envtest.sh | tail -n 1
hack/keycloak.sh install | tail -n 1
export KUBEBUILDER_ASSETS="$PWD/bin/k8s"
KEYCLOAK_HOME="$(hack/keycloak.sh home)"
export KEYCLOAK_HOME
go build -o bin/manager ./cmd
go build -o bin/localdemo ./hack/localdemo
exec bin/localdemo "$@"
