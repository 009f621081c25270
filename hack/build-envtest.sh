#!/usr/bin/env bash
# Builds the envtest control-plane binaries (etcd, kube-apiserver) from Go
# modules pinned in hack/tools/envtest, into bin/k8s/. Needs only the Go module
# proxy (no GitHub release downloads, no setup-envtest).
#
# Idempotent: bin/k8s/.stamp holds a hash of the tool module's go.mod/go.sum,
# the Go toolchain and the build recipe; when it matches and both binaries exist
# nothing is built. A cold build takes ~10 minutes on 2 cores (kube-apiserver).
#
# Usage: hack/build-envtest.sh            # from any directory
#        FORCE=1 hack/build-envtest.sh    # rebuild regardless of the stamp
# Ends by printing KUBEBUILDER_ASSETS=<abs path of bin/k8s>.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/.." && pwd)"
cd "${repo_root}"

tool_dir="${repo_root}/hack/tools/envtest"
out_dir="${repo_root}/bin/k8s"
stamp="${out_dir}/.stamp"

# Deterministic module mode regardless of the caller's environment.
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# Same tags/flags as kubernetes' own release build (hack/lib/golang.sh).
build_tags="selinux,notest,grpcnotrace"
recipe="v1 tags=${build_tags} trimpath ldflags=-s,-w,version-X"

start=$(date +%s)
log() { echo "[build-envtest] $*"; }

want_stamp="$(
  {
    cat "${tool_dir}/go.mod" "${tool_dir}/go.sum"
    go env GOVERSION GOOS GOARCH
    echo "${recipe}"
  } | sha256sum | awk '{print $1}'
)"

if [[ "${FORCE:-0}" != 1 && -x "${out_dir}/kube-apiserver" && -x "${out_dir}/etcd" \
  && -f "${stamp}" && "$(cat "${stamp}")" == "${want_stamp}" ]]; then
  log "up to date (stamp ${want_stamp:0:12}), nothing to build"
else
  mkdir -p "${out_dir}"
  rm -f "${stamp}"
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
  log "downloading modules (Go module proxy) ..."
  t=$(date +%s)
  go mod download
  log "modules ready in $(( $(date +%s) - t ))s"

  log "building kube-apiserver ${kube_version} -> ${out_dir}/kube-apiserver (cold: ~10 min on 2 cores) ..."
  t=$(date +%s)
  go build -trimpath -tags "${build_tags}" -ldflags "${kube_ldflags}" \
    -o "${out_dir}/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv -f "${out_dir}/kube-apiserver.tmp" "${out_dir}/kube-apiserver"
  log "kube-apiserver built in $(( $(date +%s) - t ))s"

  log "building etcd ${etcd_version} -> ${out_dir}/etcd ..."
  t=$(date +%s)
  go build -trimpath -tags "${build_tags}" -ldflags "-s -w" \
    -o "${out_dir}/etcd.tmp" go.etcd.io/etcd/server/v3
  mv -f "${out_dir}/etcd.tmp" "${out_dir}/etcd"
  log "etcd built in $(( $(date +%s) - t ))s"

  echo "${want_stamp}" > "${stamp}"
  cd "${repo_root}"
fi

log "done in $(( $(date +%s) - start ))s"
echo "KUBEBUILDER_ASSETS=${out_dir}"
