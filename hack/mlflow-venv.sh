#!/usr/bin/env bash
# Creates the Python virtualenv used by the end-to-end test (test/e2e) and by the client plugin's
# own test suite: a real MLflow server with mlflow-oidc-auth, the MLflow client, the plugin from
# clients/python (installed editable) and pytest.
#
#   hack/mlflow-venv.sh          create or update bin/venv-mlflow (cached: a no-op when up to date)
#   hack/mlflow-venv.sh path     print the venv's absolute path (no install)
#
# Environment:
#   PYTHON            interpreter to build the venv from (default: python3; needs >= 3.11, the
#                     floor of mlflow-oidc-auth 11.x)
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
PY="${PYTHON:-python3}"
STAMP="$VENV/.mlflow-venv-stamp"

log() { echo "mlflow-venv.sh: $*" >&2; }

if [[ "${1:-}" == "path" ]]; then
	echo "$VENV"
	exit 0
fi

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
	log "$PY is missing or older than Python 3.11 (mlflow-oidc-auth 11.x needs >= 3.11); set PYTHON"
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
