#!/usr/bin/env bash
# Builds the release artifacts of one version into DIST (default dist/), what a forge's release
# job uploads (.github/workflows/release.yaml runs `make release`; docs/releasing.md):
#
#   mlflow-token-operator-V-image.tar             the operator image (OCI index, linux/amd64 +
#                                                 linux/arm64) from `make image`
#   install.yaml                                  `make build-installer`, the image pinned by the
#                                                 tarball's index digest
#   mlflow-token-operator-V.tgz                   the Helm chart, version V, appVersion vV, its
#                                                 default image.digest set to the same digest
#   kubectl-mlflow_token_V_OS_ARCH.tar.gz         the kubectl plugin (static, version stamped) and
#                                                 LICENSE, for linux and darwin on amd64 and arm64
#   mlflow_token_file_auth-PYV-py3-none-any.whl   the MLflow auth plugin (clients/python), version
#   mlflow_token_file_auth-PYV.tar.gz             V in PEP 440 form (0.2.0-rc.1 -> 0.2.0rc1)
#   mlflow-token.yaml                             the Krew plugin manifest (download URLs of the
#                                                 forge's release, sha256 of each archive)
#   SHA256SUMS                                    sha256sum -c SHA256SUMS checks all of the above
#
# test/release unpacks them and checks that they agree (versions, digests, checksums).
#
# Usage: hack/release.sh           build the artifacts (and the tools, when missing or stale)
#        hack/release.sh tools     only the tools: helm and kustomize (hack/packaging-tools.sh),
#                                  bin/venv-release (hack/release-requirements.txt, from PyPI),
#                                  the Go modules (go mod download)
#
# Environment:
#   VERSION            X.Y.Z or X.Y.Z-(alpha|beta|rc).N, without the v (default: the VERSION file)
#   IMG                the operator image's name:tag (default ghcr.io/mlflow-token-operator/mlflow-token-operator:vVERSION)
#   DIST               where the artifacts go (default: dist); release artifacts of an earlier
#                      run there are replaced, other files are left alone
#   IMAGES_DIR         where `make image` keeps its tarball (default: bin/images; cached there)
#   RELEASE_URL        download URL of the release's files, for the Krew manifest (default:
#                      https://github.com/mlflow-token-operator/mlflow-token-operator/releases/download/vVERSION)
#   SOURCE_DATE_EPOCH  the time in the image, the archives and the wheel (default: the commit time)
#   PYTHON             the Python that makes bin/venv-release (default: python3; 3.11 or newer)
#   RELEASE_OFFLINE=1  fail instead of fetching tools from PyPI or the Go module proxy (tests)
#
# Reproducible: the image, the plugin archives and the chart archive are byte for byte the same
# for one commit and toolchain (fixed times, owners and order); the wheel too (SOURCE_DATE_EPOCH).
# The sdist is not (setuptools stamps the gzip header with the time of the build).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
# Run from `make release VERSION=...`, the variables of the caller's command line would reach the
# `make build-installer` below through MAKEFLAGS and override what this script passes it.
unset MAKEFLAGS MAKELEVEL MFLAGS

log() { echo "[release] $*"; }
die() { echo "[release] error: $*" >&2; exit 1; }

VERSION="${VERSION:-$(cat VERSION)}"
VERSION="${VERSION#v}"
[[ "${VERSION}" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(alpha|beta|rc)\.(0|[1-9][0-9]*))?$ ]] \
  || die "VERSION=${VERSION}: want X.Y.Z or X.Y.Z-alpha.N, -beta.N, -rc.N (a form both SemVer and PEP 440 can say)"
# PEP 440 spells the same pre-release 0.2.0rc1, and pip normalises to that.
PY_VERSION="$(sed -E 's/-alpha\./a/; s/-beta\./b/; s/-rc\./rc/' <<<"${VERSION}")"
IMG="${IMG:-ghcr.io/mlflow-token-operator/mlflow-token-operator:v${VERSION}}"
[[ "${IMG##*/}" == *:* && "${IMG}" != *@* ]] || die "IMG=${IMG}: want name:tag (the release pins the digest itself)"
IMG_NAME="${IMG%:*}"
DIST="${DIST:-dist}"
[[ "${DIST}" == /* ]] || DIST="${repo_root}/${DIST}"
IMAGES_DIR="${IMAGES_DIR:-${repo_root}/bin/images}"
RELEASE_URL="${RELEASE_URL:-https://github.com/mlflow-token-operator/mlflow-token-operator/releases/download/v${VERSION}}"
PLUGIN_PLATFORMS=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
TOOLS="${repo_root}/bin/tools"
VENV="${repo_root}/bin/venv-release"
PYTHON="${PYTHON:-python3}"

if git rev-parse --git-dir >/dev/null 2>&1; then
  EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
  if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    log "note: uncommitted changes: the artifacts hold the working tree, not commit $(git rev-parse --short HEAD)"
  fi
else
  EPOCH="${SOURCE_DATE_EPOCH:-0}"
fi
export SOURCE_DATE_EPOCH="${EPOCH}"

# --- tools -------------------------------------------------------------------------------------
venv_want() { { cat hack/release-requirements.txt; "${PYTHON}" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1; }

tools() {
  local want
  if [[ "${RELEASE_OFFLINE:-0}" == 1 ]]; then
    for t in helm kustomize; do
      [[ -x "${TOOLS}/${t}" ]] || die "${TOOLS}/${t} is missing: run hack/release.sh tools (or hack/packaging-tools.sh)"
    done
  else
    hack/packaging-tools.sh | sed 's/^/[release] /'
    # The modules of the operator, the plugin and the image builder, so that a build with
    # RELEASE_OFFLINE=1 GOPROXY=off (test/release) finds them all.
    go mod download
    (cd hack/tools/image && go mod download)
  fi
  "${PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "${PYTHON} is $("${PYTHON}" -V 2>&1): the release build wants Python 3.11 or newer (PYTHON=python3.12)"
  want="$(venv_want)"
  if [[ -x "${VENV}/bin/python" && "$(cat "${VENV}/.stamp" 2>/dev/null)" == "${want}" ]]; then
    log "bin/venv-release: up to date"
    return
  fi
  [[ "${RELEASE_OFFLINE:-0}" != 1 ]] || die "bin/venv-release is missing or stale: run hack/release.sh tools (it installs hack/release-requirements.txt from PyPI)"
  log "bin/venv-release: installing hack/release-requirements.txt (pinned, with hashes) ..."
  rm -rf "${VENV}"
  "${PYTHON}" -m venv "${VENV}"
  "${VENV}/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
    --only-binary :all: -r hack/release-requirements.txt
  echo "${want}" >"${VENV}/.stamp"
}

tools
[[ "${1:-}" == tools ]] && exit 0
[[ $# -eq 0 ]] || die "unknown argument $1: want no argument, or tools"

# --- the artifacts -----------------------------------------------------------------------------
start=$(date +%s)
log "version ${VERSION} (Python ${PY_VERSION}), image ${IMG}, into ${DIST}"
mkdir -p "${repo_root}/bin"
work="$(mktemp -d "${repo_root}/bin/release-work.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
out="${work}/out"
mkdir -p "${out}"
step() { log "$1 ..."; step_start=$(date +%s); }
done_step() { log "  $1 ($(($(date +%s) - step_start))s)"; }

# Tar with fixed metadata: sorted names, owner root, one time, no atime/ctime: equal inputs give
# equal archives. Usage: det_tar DIR NAME... > out.tar.gz
det_tar() {
  local dir="$1"
  shift
  tar --create --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${EPOCH}" \
    --directory "${dir}" "$@" | gzip -n -9
}

step "the operator image (make image: ${IMAGES_DIR}/operator.tar)"
VERSION="${VERSION}" IMG="${IMG}" IMAGES_DIR="${IMAGES_DIR}" hack/images.sh operator | sed 's/^/[release]   /'
image_tar="mlflow-token-operator-${VERSION}-image.tar"
cp "${IMAGES_DIR}/operator.tar" "${out}/${image_tar}"
DIGEST="$("${TOOLS}/image-build" digest "${out}/${image_tar}")"
[[ "${DIGEST}" =~ ^sha256:[0-9a-f]{64}$ ]] || die "image-build digest said '${DIGEST}'"
PINNED="${IMG_NAME}@${DIGEST}"
done_step "${image_tar}: ${PINNED}"

step "install.yaml (make build-installer IMG=${PINNED})"
make -s build-installer DIST="${out}" IMG="${PINNED}" VERSION="${VERSION}" >/dev/null
grep -q "image: ${PINNED}\$" "${out}/install.yaml" || die "install.yaml does not run ${PINNED}"
done_step "install.yaml"

step "the Helm chart"
# The packaged chart's default image is pinned to the same digest as install.yaml: a chart
# version then always runs the same bytes, whatever later happens to the tag, and the two ways
# to install a release run the same image. Mirrors copied with their digests (skopeo copy
# --preserve-digests) need only image.repository; an image built elsewhere needs image.digest="".
chart_stage="${work}/chart/mlflow-token-operator"
mkdir -p "${work}/chart"
cp -r charts/mlflow-token-operator "${chart_stage}"
[[ "$(grep -c '^  digest: ""$' "${chart_stage}/values.yaml")" == 1 ]] \
  || die "charts/mlflow-token-operator/values.yaml: expected one line '  digest: \"\"' (image.digest) to pin"
[[ "$(grep -c '^  repository: ' "${chart_stage}/values.yaml")" == 1 ]] \
  || die "charts/mlflow-token-operator/values.yaml: expected one line '  repository: ...' (image.repository)"
sed -i -e "s|^  digest: \"\"\$|  digest: \"${DIGEST}\"|" -e "s|^  repository: .*\$|  repository: ${IMG_NAME}|" "${chart_stage}/values.yaml"
go run ./hack/chartdoc "${chart_stage}" >/dev/null # the README's values table shows the pinned default
"${TOOLS}/helm" lint --strict "${chart_stage}" >"${work}/helm-lint.log" 2>&1 || { cat "${work}/helm-lint.log"; die "helm lint of the packaged chart failed"; }
"${TOOLS}/helm" package --version "${VERSION}" --app-version "v${VERSION}" --destination "${work}/chart" "${chart_stage}" >/dev/null
chart_tgz="mlflow-token-operator-${VERSION}.tgz"
# helm package stamps every entry with the time of the build; the same content repacked with
# fixed metadata (files only, as helm writes them) gives the chart one digest per commit.
mkdir -p "${work}/chart/unpacked"
tar -xzmf "${work}/chart/${chart_tgz}" -C "${work}/chart/unpacked"
(cd "${work}/chart/unpacked" && find mlflow-token-operator -type f | LC_ALL=C sort) >"${work}/chart/files"
tar --create --format=gnu --owner=0 --group=0 --numeric-owner --mtime="@${EPOCH}" --mode='u+rw,go+r,go-w' \
  --directory "${work}/chart/unpacked" --no-recursion --files-from "${work}/chart/files" | gzip -n -9 >"${out}/${chart_tgz}"
done_step "${chart_tgz}: version ${VERSION}, appVersion v${VERSION}, image.digest ${DIGEST}"

step "the kubectl plugin for ${PLUGIN_PLATFORMS[*]}"
plugin_archives=()
for platform in "${PLUGIN_PLATFORMS[@]}"; do
  os="${platform%/*}" arch="${platform#*/}"
  dir="${work}/plugin/${os}_${arch}"
  mkdir -p "${dir}"
  t=$(date +%s)
  # Static (no cgo), no paths of this machine (-trimpath), stripped; the version stamped in.
  CGO_ENABLED=0 GOOS="${os}" GOARCH="${arch}" go build -trimpath \
    -ldflags "-s -w -X main.version=v${VERSION}" -o "${dir}/kubectl-mlflow_token" ./cmd/kubectl-mlflow_token
  cp LICENSE "${dir}/LICENSE" # Krew's index wants the license inside the archive
  chmod 0755 "${dir}/kubectl-mlflow_token"
  chmod 0644 "${dir}/LICENSE"
  archive="kubectl-mlflow_token_${VERSION}_${os}_${arch}.tar.gz"
  det_tar "${dir}" LICENSE kubectl-mlflow_token >"${out}/${archive}"
  plugin_archives+=("${archive}")
  log "  ${archive} ($(($(date +%s) - t))s)"
done
done_step "plugin archives"

step "the Python plugin (clients/python) ${PY_VERSION}"
py_stage="${work}/python/src"
mkdir -p "${py_stage}"
cp -r clients/python/pyproject.toml clients/python/README.md clients/python/LICENSE clients/python/src "${py_stage}/"
find "${py_stage}" -name '__pycache__' -prune -exec rm -rf {} +
# pyproject.toml keeps the VERSION file's version (test/release checks that); the build takes
# VERSION, which may be a release candidate of it.
[[ "$(grep -c '^version = "[^"]*"$' "${py_stage}/pyproject.toml")" == 1 ]] || die "clients/python/pyproject.toml: expected one line 'version = \"...\"'"
sed -i -E "s/^version = \"[^\"]*\"\$/version = \"${PY_VERSION}\"/" "${py_stage}/pyproject.toml"
find "${py_stage}" -exec touch -h -d "@${EPOCH}" {} +
"${VENV}/bin/python" -m build --no-isolation --outdir "${work}/python/dist" "${py_stage}" >"${work}/python/build.log" 2>&1 \
  || { cat "${work}/python/build.log"; die "python -m build failed"; }
wheel="mlflow_token_file_auth-${PY_VERSION}-py3-none-any.whl"
sdist="mlflow_token_file_auth-${PY_VERSION}.tar.gz"
for f in "${wheel}" "${sdist}"; do
  [[ -f "${work}/python/dist/${f}" ]] || die "python -m build made $(ls "${work}/python/dist"), not ${f}"
  cp "${work}/python/dist/${f}" "${out}/${f}"
done
done_step "${wheel}, ${sdist}"

step "the Krew manifest"
{
  cat <<EOF
# Krew plugin manifest of kubectl mlflow-token v${VERSION} (written by hack/release.sh).
# kubectl krew install --manifest=mlflow-token.yaml, or submit it to the krew-index.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: mlflow-token
spec:
  version: v${VERSION}
  homepage: https://github.com/mlflow-token-operator/mlflow-token-operator
  shortDescription: List, inspect, renew and revoke MLflow tokens of the operator
  description: |
    The companion of mlflow-token-operator, which keeps a Keycloak access token
    for MLflow fresh in a Secret for each MLflowAccessToken resource.
    list shows each token's state, expiry and next renewal; inspect shows the
    non-secret claims of the token in the Secret, the session and the last
    failure (what you need to debug a 401 from MLflow); renew rotates a token
    now; revoke revokes a leaked token at Keycloak and rotates it; bootstrap
    seeds a RefreshToken grant by logging in in a browser (OAuth device flow).
    kubectl's own flags work (--context, -n, -A, -l, -o).
  caveats: |
    Needs mlflow-token-operator (the MLflowAccessToken CRD) in the cluster.
    inspect reads the token's Secret (get on secrets) to show its claims;
    renew and revoke patch the resource and wait for the operator.
    kubectl mlflow-token --help lists the commands and exit codes.
  platforms:
EOF
  for i in "${!PLUGIN_PLATFORMS[@]}"; do
    platform="${PLUGIN_PLATFORMS[$i]}"
    archive="${plugin_archives[$i]}"
    cat <<EOF
  - selector:
      matchLabels:
        os: ${platform%/*}
        arch: ${platform#*/}
    uri: ${RELEASE_URL}/${archive}
    sha256: $(sha256sum "${out}/${archive}" | cut -d' ' -f1)
    bin: kubectl-mlflow_token
    files:
    - from: kubectl-mlflow_token
      to: .
    - from: LICENSE
      to: .
EOF
  done
} >"${out}/mlflow-token.yaml"
done_step "mlflow-token.yaml"

# --- into DIST -----------------------------------------------------------------------------------
artifacts=("${image_tar}" install.yaml "${chart_tgz}" "${plugin_archives[@]}" "${wheel}" "${sdist}" mlflow-token.yaml)
(cd "${out}" && sha256sum "${artifacts[@]}") >"${out}/SHA256SUMS"
mkdir -p "${DIST}"
# Release artifacts of an earlier run (any version) would otherwise sit beside these, outside
# SHA256SUMS; nothing else in DIST is touched.
(cd "${DIST}" && rm -f mlflow-token-operator-*-image.tar mlflow-token-operator-*.tgz install.yaml \
  kubectl-mlflow_token_*.tar.gz mlflow_token_file_auth-*.whl mlflow_token_file_auth-*.tar.gz mlflow-token.yaml SHA256SUMS)
for f in "${artifacts[@]}" SHA256SUMS; do
  mv "${out}/${f}" "${DIST}/${f}"
done
log "wrote ${DIST} in $(($(date +%s) - start))s:"
for f in "${artifacts[@]}" SHA256SUMS; do
  printf '[release]   %10d  %s\n' "$(stat -c %s "${DIST}/${f}")" "${f}"
done
log "image digest ${DIGEST}"
