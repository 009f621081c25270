#!/usr/bin/env bash
# Installs the Mermaid parser that test/packaging (TestDocsMermaid) runs on the docs' diagrams:
# mermaid and jsdom, pinned with integrity hashes in hack/mermaid-check/package-lock.json, into
# bin/mermaid-check (npm ci: exactly the lock file). Needs Node.js >= 18 and the npm registry the
# first time. Cached: bin/mermaid-check/.stamp holds a hash of the lock file, the script and the
# Node version; nothing is fetched while it matches.
#
# Usage: hack/mermaid-check.sh          # install what is missing or stale
#        hack/mermaid-check.sh path     # print the absolute path of bin/mermaid-check
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${repo_root}/hack/mermaid-check"
out="${repo_root}/bin/mermaid-check"
if [[ "${1:-}" == path ]]; then echo "${out}"; exit 0; fi

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "[mermaid-check] node and npm are needed (Node.js >= 18): apt-get install nodejs npm" >&2
  exit 1
}
want="$(cat "${src}/package.json" "${src}/package-lock.json" "${src}/check.mjs" "$0" <(node --version) | sha256sum | awk '{print $1}')"
if [[ -f "${out}/.stamp" && "$(cat "${out}/.stamp")" == "${want}" && -d "${out}/node_modules/mermaid" ]]; then
  echo "[mermaid-check] up to date"
  exit 0
fi
start=$(date +%s)
rm -rf "${out}"
mkdir -p "${out}"
cp "${src}/package.json" "${src}/package-lock.json" "${src}/check.mjs" "${out}/"
(cd "${out}" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
echo "${want}" >"${out}/.stamp"
echo "[mermaid-check] installed in $(( $(date +%s) - start ))s: ${out}"
