#!/usr/bin/env bash
# Builds Kubernetes binaries from Go modules pinned in hack/tools/envtest (k8s.io/kubernetes and
# etcd), into bin/k8s/. Needs only the Go module proxy (no GitHub release downloads, no
# setup-envtest, no container images).
#
#   hack/build-envtest.sh          # envtest: etcd, kube-apiserver (what envtest needs, nothing more)
#   hack/build-envtest.sh servers  # kube-controller-manager too: test/federated runs its namespace
#                                  #   controller and garbage collector (run it after the envtest set)
#   hack/build-envtest.sh node     # a whole node for test/node: kubelet, kube-controller-manager,
#                                  #   kube-scheduler, kube-proxy (run it after the envtest set), and
#                                  #   the node's cluster DNS, CoreDNS (hack/tools/coredns)
#   FORCE=1 hack/build-envtest.sh [servers|node]   # rebuild regardless of the stamps
#
# Idempotent: each binary has a stamp (bin/k8s/.built-<name>) holding a hash of the tool module's
# go.mod/go.sum, the Go toolchain and the build recipe; a binary whose stamp matches is not built
# again, so one two sets share (kube-controller-manager) is built once. Cold builds on 2 cores: kube-apiserver ~10 min, kubelet 3-9 min,
# kube-controller-manager ~4 min, the others ~1 min (they share most packages: the later ones are
# faster). Warm (Go build cache filled): seconds to a minute each.
# Ends by printing KUBEBUILDER_ASSETS=<abs path of bin/k8s>.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/.." && pwd)"
cd "${repo_root}"

set_name="${1:-envtest}"
case "${set_name}" in
  envtest) binaries=(kube-apiserver etcd) ;;
  servers) binaries=(kube-controller-manager) ;;
  node) binaries=(kubelet kube-controller-manager kube-scheduler kube-proxy) ;;
  *) echo "usage: $0 [envtest|servers|node]" >&2; exit 2 ;;
esac

tool_dir="${repo_root}/hack/tools/envtest"
out_dir="${repo_root}/bin/k8s"

# Deterministic module mode regardless of the caller's environment.
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# Same tags/flags as kubernetes' own release build (hack/lib/golang.sh).
build_tags="selinux,notest,grpcnotrace"
recipe="v1 tags=${build_tags} trimpath ldflags=-s,-w,version-X"

start=$(date +%s)
log() { echo "[build-envtest ${set_name}] $*"; }
# shellcheck source=hack/lib.sh
source "${script_dir}/lib.sh"

want_stamp="$(
  {
    cat "${tool_dir}/go.mod" "${tool_dir}/go.sum"
    go env GOVERSION GOOS GOARCH
    echo "${recipe}"
  } | sha256sum | awk '{print $1}'
)"

# built NAME: the binary is there, built by this recipe from these modules.
built() { [[ "${FORCE:-0}" != 1 && -x "${out_dir}/$1" && "$(cat "${out_dir}/.built-$1" 2>/dev/null)" == "${want_stamp}" ]]; }
todo=()
for b in "${binaries[@]}"; do built "${b}" || todo+=("${b}"); done

if ((${#todo[@]} == 0)); then
  log "up to date (stamp ${want_stamp:0:12}), nothing to build"
else
  mkdir -p "${out_dir}"
  cd "${tool_dir}"

  kube_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"        # e.g. v1.37.2
  kube_time="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  etcd_version="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
  kube_major="${kube_version#v}"; kube_major="${kube_major%%.*}"
  kube_minor="${kube_version#v*.}"; kube_minor="${kube_minor%%.*}"

  kube_ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X ${pkg}.gitVersion=${kube_version}"
    kube_ldflags+=" -X ${pkg}.gitMajor=${kube_major} -X ${pkg}.gitMinor=${kube_minor}"
    kube_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${kube_time}"
  done

  log "go: $(go env GOVERSION), GOCACHE=$(go env GOCACHE)"
  log "downloading modules (Go module proxy; the first time a few hundred MB) ..."
  t=$(date +%s)
  status=0
  ticking log downloading go mod download || status=$?
  if ((status)); then log "go mod download failed"; exit "${status}"; fi
  log "modules ready in $(( $(date +%s) - t ))s"

  for b in "${todo[@]}"; do
    if [[ "${b}" == etcd ]]; then
      pkg=go.etcd.io/etcd/server/v3 version="${etcd_version}" ldflags="-s -w"
    else
      pkg="k8s.io/kubernetes/cmd/${b}" version="${kube_version}" ldflags="${kube_ldflags}"
    fi
    log "building ${b} ${version} -> ${out_dir}/${b} ..."
    t=$(date +%s)
    status=0
    ticking log "building ${b}" go build -trimpath -tags "${build_tags}" -ldflags "${ldflags}" \
      -o "${out_dir}/${b}.tmp" "${pkg}" || status=$?
    if ((status)); then log "building ${b} failed"; exit "${status}"; fi
    rm -f "${out_dir}/.built-${b}"
    mv -f "${out_dir}/${b}.tmp" "${out_dir}/${b}"
    echo "${want_stamp}" > "${out_dir}/.built-${b}"
    log "${b} built in $(( $(date +%s) - t ))s"
  done

  cd "${repo_root}"
fi

# The node's cluster DNS: CoreDNS, pinned in its own tool module (hack/tools/coredns: only the
# plugins the node uses), with its own stamp. Cold about 2 minutes (it shares client-go with the
# rest), warm seconds.
build_coredns() {
  local dir="${repo_root}/hack/tools/coredns" cstamp="${out_dir}/.stamp-coredns" want t status=0
  want="$( { cat "${dir}/go.mod" "${dir}/go.sum" "${dir}/main.go"; go env GOVERSION GOOS GOARCH; } | sha256sum | awk '{print $1}')"
  if [[ "${FORCE:-0}" != 1 && -x "${out_dir}/coredns" && -f "${cstamp}" && "$(cat "${cstamp}")" == "${want}" ]]; then
    log "coredns up to date (stamp ${want:0:12})"
    return
  fi
  mkdir -p "${out_dir}"
  rm -f "${cstamp}"
  log "building coredns $(cd "${dir}" && go list -m -f '{{.Version}}' github.com/coredns/coredns) -> ${out_dir}/coredns ..."
  t=$(date +%s)
  (cd "${dir}" && ticking log "building coredns" go build -trimpath -ldflags "-s -w" -o "${out_dir}/coredns.tmp" .) || status=$?
  if ((status)); then log "building coredns failed"; exit "${status}"; fi
  mv -f "${out_dir}/coredns.tmp" "${out_dir}/coredns"
  echo "${want}" > "${cstamp}"
  log "coredns built in $(( $(date +%s) - t ))s"
}
if [[ "${set_name}" == node ]]; then
  build_coredns
fi

log "done in $(( $(date +%s) - start ))s"
echo "KUBEBUILDER_ASSETS=${out_dir}"
