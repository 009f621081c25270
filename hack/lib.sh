# shellcheck shell=bash
# Shell helpers shared by the hack/ scripts (sourced, not run).

# ticking LOG WHAT CMD...: runs CMD and, every minute while it runs, calls the function LOG with
# "  ... still WHAT (Ns)": a cold Go build or download prints nothing for minutes. Returns CMD's
# exit status.
ticking() {
  local logfn="$1" what="$2" t status=0 ticker
  shift 2
  t=$(date +%s)
  ( while sleep 60 >/dev/null 2>&1; do "${logfn}" "  ... still ${what} ($(( $(date +%s) - t ))s)"; done ) &
  ticker=$!
  "$@" || status=$?
  kill "${ticker}" 2>/dev/null || true
  wait "${ticker}" 2>/dev/null || true
  return "${status}"
}
