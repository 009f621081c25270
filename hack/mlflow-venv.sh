#!/usr/bin/env bash
# Creates the Python virtualenv used by the end-to-end test (test/e2e) and by the client plugin's
# own test suite: a real MLflow server with mlflow-oidc-auth, the MLflow client, the plugin from
# clients/python (installed editable) and pytest.
#
#   hack/mlflow-venv.sh          create or update bin/venv-mlflow (cached: a no-op when up to date)
#   hack/mlflow-venv.sh path     print the venv's absolute path (no install)
#
# Environment:
#   PYTHON            interpreter to build the venv from. Needs Python >= 3.12: mlflow-oidc-auth
#                     11.0.2 declares >= 3.11 but fails to import on 3.11 (a frozen dataclass
#                     with a MappingProxyType default, hashable only since 3.12). Default: the
#                     first of python3.12, python3.13 on PATH, pyenv's 3.12.x/3.13.x, python3.
#   MLFLOW_VENV_DIR   where to put the venv (default: bin/venv-mlflow, gitignored)
#
# Pins live in test/e2e/requirements.txt (the two products: mlflow, mlflow-oidc-auth, plus pytest)
# and test/e2e/constraints.txt (every transitive dependency, frozen from a working install). The
# venv is rebuilt from scratch when either file, clients/python/pyproject.toml, this script or the
# interpreter version changes (a stamp holds their hash); otherwise this script returns at once.
# The last line printed is `MLFLOW_VENV=<abs path>`; test/e2e reads MLFLOW_VENV.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLFLOW_VENV_DIR:-$ROOT/bin/venv-mlflow}"
REQ="$ROOT/test/e2e/requirements.txt"
CONSTRAINTS="$ROOT/test/e2e/constraints.txt"
PLUGIN="$ROOT/clients/python"

# is_ok PY: PY exists and is Python >= 3.12.
is_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

pick_python() {
	if [[ -n "${PYTHON:-}" ]]; then
		echo "$PYTHON"
		return
	fi
	local c root
	for c in python3.12 python3.13; do
		if command -v "$c" >/dev/null && is_ok "$c"; then
			command -v "$c"
			return
		fi
	done
	root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
	for c in "$root"/versions/3.12.*/bin/python3 "$root"/versions/3.13.*/bin/python3; do
		if [[ -x "$c" ]] && is_ok "$c"; then
			echo "$c"
			return
		fi
	done
	echo python3
}
PY="$(pick_python)"
STAMP="$VENV/.mlflow-venv-stamp"

log() { echo "mlflow-venv.sh: $*" >&2; }

if [[ "${1:-}" == "path" ]]; then
	echo "$VENV"
	exit 0
fi

if ! is_ok "$PY"; then
	log "$PY is missing or older than Python 3.12 (mlflow-oidc-auth 11.0.2 does not import on 3.11); install Python 3.12 (e.g. pyenv install 3.12) or set PYTHON"
	exit 1
fi

want="$(
	{
		"$PY" -c 'import sys; print(sys.version)'
		cat "$REQ" "$PLUGIN/pyproject.toml" "$ROOT/hack/mlflow-venv.sh"
		if [[ -f "$CONSTRAINTS" ]]; then cat "$CONSTRAINTS"; fi
	} | sha256sum | cut -d' ' -f1
)"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
	log "up to date ($VENV)"
	echo "MLFLOW_VENV=$VENV"
	exit 0
fi

start=$(date +%s)
log "building $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
constraint_args=()
if [[ -f "$CONSTRAINTS" ]]; then constraint_args=(-c "$CONSTRAINTS"); fi
"${pip[@]}" install -r "$REQ" "${constraint_args[@]}"
# The plugin, editable: its tests and the e2e job run the working tree's source.
"${pip[@]}" install "${constraint_args[@]}" -e "$PLUGIN"
"${pip[@]}" check >&2

# Fail here, not in the test, when the plugin's entry point is not registered.
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import entry_points
names = [ep.name for ep in entry_points(group="mlflow.request_auth_provider")]
assert "token-file" in names, f"plugin entry point missing; found {names}"
EOF

echo "$want" >"$STAMP"
log "built in $(($(date +%s) - start))s: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("mlflow", m.version("mlflow"), "mlflow-oidc-auth", m.version("mlflow-oidc-auth"))')"
echo "MLFLOW_VENV=$VENV"
