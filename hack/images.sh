#!/usr/bin/env bash
# Builds the project's container images as tarballs in bin/images/, without a Docker engine or a
# registry (hack/tools/image, go-containerregistry, writes them):
#
#   operator.tar      ghcr.io/mlflow-token-operator/mlflow-token-operator:v$VERSION, an OCI image
#                     index for linux/amd64 and linux/arm64: the static manager binary, nothing else
#   pause.tar         localhost/mlflow-token-operator/pause:v$VERSION, the pod sandbox image of the
#                     local test node (this machine's platform)
#   training-job.tar  localhost/mlflow-token-operator/training-job:v$VERSION: Python, the MLflow
#                     client, the token-file plugin (clients/python) and /app/training_job.py
#                     (this machine's platform; needs root: debootstrap and chroot)
#   tokenwatch.tar    localhost/mlflow-token-operator/tokenwatch:v$VERSION, the reader pod of
#                     `make run-local` (test/localdemo/tokenwatch; this machine's platform; not in
#                     `all`: only the local demo runs it)
#
# Each tarball is accepted by `ctr -n k8s.io images import`, `docker load` and
# `skopeo copy --all oci-archive:FILE docker://...` (see docs/images.md).
#
# Usage: hack/images.sh [operator] [pause] [training-job] [tokenwatch] [all]   (default: operator)
#
# Environment:
#   VERSION           version without the v (default: the VERSION file)
#   IMG               operator image reference (default: ghcr.io/mlflow-token-operator/mlflow-token-operator:v$VERSION)
#   PLATFORMS         operator platforms (default: linux/amd64,linux/arm64); an operator.tar that
#                     holds more platforms than asked for is up to date (`make run-local` asks for
#                     this machine's only, and takes the two-platform image when there is one)
#   IMAGES_DIR        where the tarballs go (default: bin/images)
#   SOURCE_DATE_EPOCH every time in the operator and pause images (default: the commit time, or 0
#                     outside git), so two builds of one commit give the same digest
#   DEBIAN_MIRROR     for the training image's root file system (default: http://deb.debian.org/debian)
#   FORCE=1           rebuild even when the stamps say nothing changed
#
# Cached: each tarball has a stamp (IMAGES_DIR/.stamp-<image>) holding a hash of everything it is
# made from; the training image's root file system and Python environment have their own stamps
# under bin/images-cache/. A second run with nothing changed returns at once.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"

VERSION="${VERSION:-$(cat VERSION)}"
VERSION="${VERSION#v}"
IMG="${IMG:-ghcr.io/mlflow-token-operator/mlflow-token-operator:v${VERSION}}"
PLATFORMS="${PLATFORMS:-linux/amd64,linux/arm64}"
IMAGES_DIR="${IMAGES_DIR:-${repo_root}/bin/images}"
CACHE_DIR="${repo_root}/bin/images-cache"
TOOL="${repo_root}/bin/tools/image-build"
PAUSE_IMG="localhost/mlflow-token-operator/pause:v${VERSION}"
TRAINING_IMG="localhost/mlflow-token-operator/training-job:v${VERSION}"
TOKENWATCH_IMG="localhost/mlflow-token-operator/tokenwatch:v${VERSION}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SUITE=bookworm

log() { echo "[images] $*"; }

# heartbeat WHAT CMD...: runs CMD and prints a line every 30 s while it runs, so that a long step
# never leaves the terminal silent for minutes. Returns CMD's exit status. The lines go to fd 3,
# the script's stdout, even when the caller sends CMD's output to a log file.
exec 3>&1
heartbeat() {
  local what="$1" pid start=${SECONDS} next=30
  shift
  "$@" &
  pid=$!
  while kill -0 "${pid}" 2>/dev/null; do
    sleep 1
    if ((SECONDS - start >= next)); then
      log "${what}: still running ($((SECONDS - start))s)" >&3
      next=$((next + 30))
    fi
  done
  wait "${pid}"
}
hash_of() { sha256sum | cut -d' ' -f1; }

if git rev-parse --git-dir >/dev/null 2>&1; then
  REVISION="$(git rev-parse HEAD)"
  EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
  if [[ -n "$(git status --porcelain -- cmd api controllers internal go.mod go.sum VERSION hack/tools/image test/localdemo 2>/dev/null)" ]]; then
    log "note: uncommitted changes; the images say revision ${REVISION:0:12} but hold the working tree"
  fi
else
  REVISION=unknown
  EPOCH="${SOURCE_DATE_EPOCH:-0}"
fi

# The builder itself (bin/tools/image-build), rebuilt when its module changes.
tool_files() { find hack/tools/image -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) ! -name '*_test.go' | LC_ALL=C sort; }
build_tool() {
  local want stamp="${TOOL}.stamp"
  want="$( { tool_files | xargs cat; go env GOVERSION GOOS GOARCH; } | hash_of)"
  if [[ -x "${TOOL}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    return
  fi
  log "building the image builder (hack/tools/image) ..."
  mkdir -p "$(dirname "${TOOL}")"
  (cd hack/tools/image && CGO_ENABLED=0 heartbeat "building the image builder" go build -trimpath -o "${TOOL}" .)
  echo "${want}" >"${stamp}"
}

# up_to_date NAME HASH: the tarball NAME.tar exists and was made from HASH.
up_to_date() {
  [[ "${FORCE:-0}" != 1 && -f "${IMAGES_DIR}/$1.tar" && -f "${IMAGES_DIR}/.stamp-$1" \
    && "$(cat "${IMAGES_DIR}/.stamp-$1")" == "$2" ]]
}

common_flags() {
  echo -revision "${REVISION}" -epoch "${EPOCH}" -version "${VERSION}"
}

# operator_up_to_date HASH: operator.tar was made from HASH for every platform in PLATFORMS (its
# stamp is "HASH PLATFORM,PLATFORM...": a two-platform image serves a one-platform request).
operator_up_to_date() {
  local stamp="${IMAGES_DIR}/.stamp-operator" have_hash have_platforms p
  [[ "${FORCE:-0}" != 1 && -f "${IMAGES_DIR}/operator.tar" && -f "${stamp}" ]] || return 1
  read -r have_hash have_platforms <"${stamp}" || true
  [[ "${have_hash}" == "$1" ]] || return 1
  for p in ${PLATFORMS//,/ }; do
    [[ ",${have_platforms}," == *",${p},"* ]] || return 1
  done
}

build_operator() {
  local want start
  want="$(
    {
      echo "operator ${IMG} ${REVISION} ${EPOCH} ${VERSION}"
      go env GOVERSION
      cat go.mod go.sum
      # Every file the manager is built from (embedded files too); tests do not go into it.
      find cmd api controllers internal -type f ! -name '*_test.go' | LC_ALL=C sort | xargs sha256sum
      tool_files | xargs cat
    } | hash_of
  )"
  if operator_up_to_date "${want}"; then
    log "operator: up to date (${IMAGES_DIR}/operator.tar, ${IMG})"
    return
  fi
  start=$(date +%s)
  log "operator: building ${IMG} for ${PLATFORMS} (with a cold Go build cache several minutes per platform on 2 cores, else seconds) ..."
  rm -f "${IMAGES_DIR}/.stamp-operator"
  # shellcheck disable=SC2046
  "${TOOL}" go-binary $(common_flags) -dir . -pkg ./cmd -binary manager \
    -platforms "${PLATFORMS}" -ref "${IMG}" -out "${IMAGES_DIR}/operator.tar" \
    -title mlflow-token-operator \
    -description "Kubernetes operator that keeps a Keycloak access token for MLflow fresh in a Secret"
  echo "${want} ${PLATFORMS}" >"${IMAGES_DIR}/.stamp-operator"
  log "operator: done in $(($(date +%s) - start))s"
}

build_pause() {
  local want start
  want="$( { echo "pause ${PAUSE_IMG} ${REVISION} ${EPOCH} ${VERSION}"; go env GOVERSION GOARCH; tool_files | xargs cat; } | hash_of)"
  if up_to_date pause "${want}"; then
    log "pause: up to date (${IMAGES_DIR}/pause.tar, ${PAUSE_IMG})"
    return
  fi
  start=$(date +%s)
  log "pause: building ${PAUSE_IMG} ..."
  rm -f "${IMAGES_DIR}/.stamp-pause"
  # 65535: the user Kubernetes' own pause image runs as.
  # shellcheck disable=SC2046
  "${TOOL}" go-binary $(common_flags) -dir hack/tools/image -pkg ./pause -binary pause \
    -platforms "linux/$(go env GOARCH)" -user 65535:65535 -ref "${PAUSE_IMG}" \
    -out "${IMAGES_DIR}/pause.tar" -title "mlflow-token-operator pause" \
    -description "Pod sandbox image of the mlflow-token-operator local test node"
  echo "${want}" >"${IMAGES_DIR}/.stamp-pause"
  log "pause: done in $(($(date +%s) - start))s"
}

build_tokenwatch() {
  local want start
  want="$(
    {
      echo "tokenwatch ${TOKENWATCH_IMG} ${REVISION} ${EPOCH} ${VERSION}"
      go env GOVERSION GOARCH
      cat go.mod
      find test/localdemo/tokenwatch test/localdemo/tokenline -type f -name '*.go' ! -name '*_test.go' | LC_ALL=C sort | xargs sha256sum
      tool_files | xargs cat
    } | hash_of
  )"
  if up_to_date tokenwatch "${want}"; then
    log "tokenwatch: up to date (${IMAGES_DIR}/tokenwatch.tar, ${TOKENWATCH_IMG})"
    return
  fi
  start=$(date +%s)
  log "tokenwatch: building ${TOKENWATCH_IMG} ..."
  rm -f "${IMAGES_DIR}/.stamp-tokenwatch"
  # 65532: a numeric non-root user, which Pod Security "restricted" (runAsNonRoot) needs.
  # shellcheck disable=SC2046
  "${TOOL}" go-binary $(common_flags) -dir test -pkg ./localdemo/tokenwatch -binary tokenwatch \
    -platforms "linux/$(go env GOARCH)" -user 65532:65532 -ref "${TOKENWATCH_IMG}" \
    -out "${IMAGES_DIR}/tokenwatch.tar" -title "mlflow-token-operator tokenwatch" \
    -description "Reader pod of make run-local: prints a fingerprint of each token its mounted Secret receives"
  echo "${want}" >"${IMAGES_DIR}/.stamp-tokenwatch"
  log "tokenwatch: done in $(($(date +%s) - start))s"
}

# --- training-job ------------------------------------------------------------------------------
# Where its root file system comes from: no registry is reachable, so no python:slim base image.
# debootstrap builds a Debian bookworm minbase (Debian's packages are reachable, and debootstrap
# checks their signatures with the Debian archive keyring) with python3; pip then installs the
# MLflow client and the plugin into a venv under /opt/venv, in a chroot, so that the venv matches
# the image's own Python (copying this machine's Python would drag in whatever happens to be
# installed here, and would not be what another machine builds). Three layers, cached apart:
#   base  debootstrap minbase + python3 (+ python3-venv for ensurepip), docs/locales/apt lists
#         dropped                                             bin/images-cache/training/base.tar.gz
#   venv  /opt/venv: mlflow-skinny, the plugin, their pinned dependencies, without pip
#                                                             bin/images-cache/training/venv.tar.gz
#   app   /app/training_job.py (test/e2e)                     made by the builder at assembly
TRAIN_CACHE="${CACHE_DIR}/training"
ROOTFS="${TRAIN_CACHE}/rootfs"
BASE_PACKAGES="python3,python3-venv"

cleanup_rootfs_mounts() {
  # debootstrap mounts /proc and /sys in the target while it runs; never leave them behind.
  local m
  for m in $(awk -v r="${ROOTFS}" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "${m}" || true
  done
  rm -f "${ROOTFS}/tmp/build-ca.crt"
}

build_training_base() {
  local want="$1" t
  if [[ "${FORCE:-0}" != 1 && -f "${TRAIN_CACHE}/base.tar.gz" && -f "${TRAIN_CACHE}/.stamp-base" \
    && "$(cat "${TRAIN_CACHE}/.stamp-base")" == "${want}" && -x "${ROOTFS}/usr/bin/python3" ]]; then
    log "training-job: base layer up to date"
    return
  fi
  command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
  rm -f "${TRAIN_CACHE}/.stamp-base" "${TRAIN_CACHE}/.stamp-venv"
  rm -rf "${ROOTFS}"
  mkdir -p "${TRAIN_CACHE}/debs"
  t=$(date +%s)
  log "training-job: debootstrap ${DEBIAN_SUITE} minbase + ${BASE_PACKAGES} from ${DEBIAN_MIRROR} (about a minute; log: ${TRAIN_CACHE}/debootstrap.log) ..."
  if ! heartbeat "training-job: debootstrap" debootstrap --variant=minbase --include="${BASE_PACKAGES}" --cache-dir="${TRAIN_CACHE}/debs" \
    "${DEBIAN_SUITE}" "${ROOTFS}" "${DEBIAN_MIRROR}" >"${TRAIN_CACHE}/debootstrap.log" 2>&1; then
    tail -n 20 "${TRAIN_CACHE}/debootstrap.log"
    log "training-job: debootstrap failed (log above)"
    exit 1
  fi
  log "training-job: debootstrap done in $(($(date +%s) - t))s"
  # What a container never needs: documentation, man pages, translations, apt's package lists
  # and caches, logs (Debian's own slim images drop the same).
  rm -rf "${ROOTFS}"/usr/share/{doc,man,info,locale,lintian,linda}/* "${ROOTFS}"/var/lib/apt/lists/* \
    "${ROOTFS}"/var/cache/apt/* "${ROOTFS}"/var/cache/debconf/*-old "${ROOTFS}"/var/log/* \
    "${ROOTFS}"/tmp/* "${ROOTFS}"/opt/*
  t=$(date +%s)
  log "training-job: packing the base layer ..."
  # Device nodes are the runtime's business (it mounts /dev), /proc and /sys too; /opt/venv is
  # the next layer.
  tar --create --numeric-owner --sort=name --directory "${ROOTFS}" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./opt/venv' . \
    | gzip -n -6 >"${TRAIN_CACHE}/base.tar.gz.tmp"
  mv "${TRAIN_CACHE}/base.tar.gz.tmp" "${TRAIN_CACHE}/base.tar.gz"
  echo "${want}" >"${TRAIN_CACHE}/.stamp-base"
  log "training-job: base layer $(du -h "${TRAIN_CACHE}/base.tar.gz" | cut -f1) in $(($(date +%s) - t))s"
}

build_training_venv() {
  local want="$1" t ca
  if [[ "${FORCE:-0}" != 1 && -f "${TRAIN_CACHE}/venv.tar.gz" && -f "${TRAIN_CACHE}/.stamp-venv" \
    && "$(cat "${TRAIN_CACHE}/.stamp-venv")" == "${want}" ]]; then
    log "training-job: venv layer up to date"
    return
  fi
  rm -f "${TRAIN_CACHE}/.stamp-venv"
  rm -rf "${ROOTFS}/opt/venv" "${ROOTFS}/tmp/plugin"
  t=$(date +%s)
  log "training-job: pip install mlflow-skinny==${MLFLOW_VERSION} and clients/python into /opt/venv (chroot; ~30 s) ..."
  mkdir -p "${ROOTFS}/tmp/plugin"
  cp -r clients/python/pyproject.toml clients/python/README.md clients/python/src "${ROOTFS}/tmp/plugin/"
  cp test/e2e/constraints.txt "${ROOTFS}/tmp/constraints.txt"
  # pip inside the chroot trusts what this machine trusts (a TLS-inspecting proxy's CA, say): a
  # copy of the host's CA bundle, removed before packing. The chroot gets a clean environment,
  # so no pip setting of this machine (PIP_FIND_LINKS, ...) leaks into the image.
  ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
  local pip_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1)
  if [[ -f "${ca}" ]]; then
    cp "${ca}" "${ROOTFS}/tmp/build-ca.crt"
    pip_env+=(PIP_CERT=/tmp/build-ca.crt)
  fi
  "${pip_env[@]}" chroot "${ROOTFS}" /usr/bin/python3 -m venv /opt/venv
  # The pins of test/e2e/constraints.txt apply (the same versions the end-to-end test runs).
  heartbeat "training-job: pip install" "${pip_env[@]}" chroot "${ROOTFS}" /opt/venv/bin/pip install -q -c /tmp/constraints.txt \
    "mlflow-skinny==${MLFLOW_VERSION}" /tmp/plugin
  "${pip_env[@]}" chroot "${ROOTFS}" /opt/venv/bin/python - <<'EOF'
from importlib.metadata import entry_points
import mlflow, mlflow_token_file_auth  # noqa: F401
names = [ep.name for ep in entry_points(group="mlflow.request_auth_provider")]
assert "token-file" in names, f"plugin entry point missing; found {names}"
EOF
  # The image runs jobs, it does not install packages.
  "${pip_env[@]}" chroot "${ROOTFS}" /opt/venv/bin/pip uninstall -q -y pip setuptools
  rm -rf "${ROOTFS}/tmp/plugin" "${ROOTFS}/tmp/constraints.txt" "${ROOTFS}/tmp/build-ca.crt"
  log "training-job: venv ready in $(($(date +%s) - t))s; packing it ..."
  t=$(date +%s)
  tar --create --numeric-owner --sort=name --directory "${ROOTFS}" ./opt/venv \
    | gzip -n -6 >"${TRAIN_CACHE}/venv.tar.gz.tmp"
  mv "${TRAIN_CACHE}/venv.tar.gz.tmp" "${TRAIN_CACHE}/venv.tar.gz"
  echo "${want}" >"${TRAIN_CACHE}/.stamp-venv"
  log "training-job: venv layer $(du -h "${TRAIN_CACHE}/venv.tar.gz" | cut -f1) in $(($(date +%s) - t))s"
}

build_training_job() {
  local base_want venv_want want start
  MLFLOW_VERSION="$(sed -n 's/^mlflow-skinny==//p' test/e2e/constraints.txt)"
  [[ -n "${MLFLOW_VERSION}" ]] || { log "no mlflow-skinny pin in test/e2e/constraints.txt"; exit 1; }
  base_want="$(echo "base v1 ${DEBIAN_SUITE} ${DEBIAN_MIRROR} ${BASE_PACKAGES} $(uname -m)" | hash_of)"
  venv_want="$(
    {
      echo "venv v1 ${base_want} ${MLFLOW_VERSION}"
      cat test/e2e/constraints.txt
      find clients/python/pyproject.toml clients/python/README.md clients/python/src -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum
    } | hash_of
  )"
  want="$( { echo "training-job ${TRAINING_IMG} ${venv_want} ${REVISION} ${VERSION}"; sha256sum test/e2e/training_job.py; tool_files | xargs cat; } | hash_of)"
  if up_to_date training-job "${want}"; then
    log "training-job: up to date (${IMAGES_DIR}/training-job.tar, ${TRAINING_IMG})"
    return
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "training-job: needs root (debootstrap and chroot build its root file system): run 'sudo make images'"
    exit 1
  fi
  start=$(date +%s)
  rm -f "${IMAGES_DIR}/.stamp-training-job"
  mkdir -p "${TRAIN_CACHE}"
  trap cleanup_rootfs_mounts EXIT
  build_training_base "${base_want}"
  build_training_venv "${venv_want}"
  cleanup_rootfs_mounts
  trap - EXIT
  log "training-job: assembling ${TRAINING_IMG} ..."
  # The layers were packed above; the time of this build is the image's creation time (this
  # image is not meant to be reproducible: Debian and PyPI move).
  "${TOOL}" rootfs -revision "${REVISION}" -epoch "$(date +%s)" -version "${VERSION}" \
    -ref "${TRAINING_IMG}" -out "${IMAGES_DIR}/training-job.tar" -user 65532:65532 \
    -layer "${TRAIN_CACHE}/base.tar.gz=debootstrap --variant=minbase --include=${BASE_PACKAGES} ${DEBIAN_SUITE}" \
    -layer "${TRAIN_CACHE}/venv.tar.gz=python3 -m venv /opt/venv && pip install -c test/e2e/constraints.txt mlflow-skinny==${MLFLOW_VERSION} clients/python" \
    -file "test/e2e/training_job.py=/app/training_job.py" \
    -env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    -env VIRTUAL_ENV=/opt/venv -env PYTHONUNBUFFERED=1 -env HOME=/tmp -env LANG=C.UTF-8 \
    -entrypoint /opt/venv/bin/python,/app/training_job.py -workdir /tmp \
    -title "mlflow-token-operator training-job" \
    -description "Python with the MLflow client and the token-file auth plugin, running test/e2e/training_job.py"
  echo "${want}" >"${IMAGES_DIR}/.stamp-training-job"
  log "training-job: done in $(($(date +%s) - start))s"
}

targets=("$@")
((${#targets[@]})) || targets=(operator)
mkdir -p "${IMAGES_DIR}"
build_tool
for target in "${targets[@]}"; do
  case "${target}" in
    operator) build_operator ;;
    pause) build_pause ;;
    training-job) build_training_job ;;
    tokenwatch) build_tokenwatch ;;
    all) build_operator; build_pause; build_training_job ;;
    *) log "unknown image ${target}: want operator, pause, training-job, tokenwatch or all"; exit 2 ;;
  esac
done
log "images in ${IMAGES_DIR}: $(cd "${IMAGES_DIR}" && ls -- *.tar 2>/dev/null | tr '\n' ' ')"
