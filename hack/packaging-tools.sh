#!/usr/bin/env bash
# Builds the tools the packaging tests (test/packaging) and `make build-installer` need, from Go
# modules pinned under hack/tools/<tool>/ (each its own go.mod, so `go test ./...` skips them):
#   bin/tools/kustomize     sigs.k8s.io/kustomize/kustomize/v5   (hack/tools/kustomize)
#   bin/tools/helm          helm.sh/helm/v3/cmd/helm             (hack/tools/helm)
#   bin/tools/promql-check  Prometheus' PromQL parser            (hack/tools/promql)
#   bin/tools/argocd-lua    gopher-lua, run as Argo CD runs health checks (hack/tools/argocd-lua)
# Needs only the Go module proxy. Cached: bin/tools/.stamp-<tool> holds a hash of the tool
# module's files and the Go version; a tool is rebuilt only when that changes.
#
# Usage: hack/packaging-tools.sh            # build what is missing or stale
#        hack/packaging-tools.sh helm       # only these tools (`make run-local` needs only helm)
#        hack/packaging-tools.sh path       # print the absolute path of bin/tools
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/lib.sh
source "${repo_root}/hack/lib.sh"
say() { echo "[packaging-tools] $*"; }
out_dir="${repo_root}/bin/tools"
if [[ "${1:-}" == path ]]; then echo "${out_dir}"; exit 0; fi

export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
mkdir -p "${out_dir}"

# tool name -> "module dir|package"
declare -A tools=(
  [kustomize]="kustomize|sigs.k8s.io/kustomize/kustomize/v5"
  [helm]="helm|helm.sh/helm/v3/cmd/helm"
  [promql-check]="promql|."
  [argocd-lua]="argocd-lua|."
)

wanted=("$@")
((${#wanted[@]})) || wanted=(kustomize helm promql-check argocd-lua)
for tool in "${wanted[@]}"; do
  [[ -n "${tools[$tool]:-}" ]] || { echo "[packaging-tools] unknown tool ${tool}: want kustomize, helm, promql-check or argocd-lua" >&2; exit 2; }
  IFS='|' read -r dir pkg <<<"${tools[$tool]}"
  mod_dir="${repo_root}/hack/tools/${dir}"
  stamp="${out_dir}/.stamp-${tool}"
  want="$(cat "${mod_dir}"/go.mod "${mod_dir}"/go.sum "${mod_dir}"/*.go "$0" 2>/dev/null | cat - <(go env GOVERSION GOOS GOARCH) | sha256sum | awk '{print $1}')"
  if [[ -x "${out_dir}/${tool}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    echo "[packaging-tools] ${tool}: up to date"
    continue
  fi
  start=$(date +%s)
  rm -f "${stamp}"
  ldflags="-s -w"
  if [[ "${tool}" == helm ]]; then
    # What Helm's own release build stamps in: its version, and the Kubernetes version that
    # `helm template` and `helm lint` assume (from the client-go it is built with).
    helm_version="$(cd "${mod_dir}" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
    kube_minor="$(cd "${mod_dir}" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=${helm_version}"
    for pkg_path in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ldflags+=" -X ${pkg_path}.k8sVersionMajor=1 -X ${pkg_path}.k8sVersionMinor=${kube_minor}"
    done
  fi
  echo "[packaging-tools] ${tool}: building (cold: a few minutes) ..."
  status=0
  (cd "${mod_dir}" && ticking say "building ${tool}" go build -trimpath -ldflags="${ldflags}" -o "${out_dir}/${tool}" "${pkg}") || status=$?
  if ((status)); then echo "[packaging-tools] building ${tool} failed" >&2; exit "${status}"; fi
  echo "${want}" >"${stamp}"
  echo "[packaging-tools] ${tool}: built in $(( $(date +%s) - start ))s"
done
echo "PACKAGING_TOOLS=${out_dir}"
