#!/usr/bin/env bash
# Fetches and prepares a local Keycloak distribution for integration tests and the local demo.
#
#   hack/keycloak.sh install   download (Maven Central), unzip into bin/keycloak-<version>, and run
#                              `kc.sh build` once so servers can use `start --optimized`
#   hack/keycloak.sh home      print the absolute KEYCLOAK_HOME path (no download)
#
# Environment:
#   KEYCLOAK_VERSION   distribution version (default 26.7.3)
#   KEYCLOAK_JAVA_HOME JDK to run Keycloak with (default: newest /usr/lib/jvm/temurin-25*, else Java 17)
#
# The last line of `install` is `KEYCLOAK_HOME=<abs path>`; test/keycloak (Go) reads KEYCLOAK_HOME.
#
# Start mode: `build` + `start --optimized` was measured faster on a 2-core machine than `start-dev`
# (which also re-runs the Quarkus build whenever its build options change and writes into lib/).
# The build options below are the ones test/keycloak expects; runtime options (ports, cache=local,
# http-enabled, hostname-strict) are passed at start.
set -euo pipefail

KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.7.3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/bin"
KC_HOME="$BIN_DIR/keycloak-$KEYCLOAK_VERSION"
ARTIFACT="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip"
# Build-time options baked into lib/quarkus by `kc.sh build`. Keep in sync with test/keycloak/server.go.
BUILD_OPTS=(--db=dev-file --health-enabled=true)
STAMP="$KC_HOME/.build-options"

CLEANUP=()
cleanup() { if ((${#CLEANUP[@]})); then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

log() { echo "keycloak.sh: $*" >&2; }

detect_java() {
	if [[ -n "${KEYCLOAK_JAVA_HOME:-}" ]]; then
		echo "$KEYCLOAK_JAVA_HOME"
		return
	fi
	local d
	d="$(ls -d /usr/lib/jvm/temurin-25* 2>/dev/null | sort -V | tail -n1 || true)"
	if [[ -n "$d" && -x "$d/bin/java" ]]; then
		echo "$d"
		return
	fi
	for d in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/openjdk-17 /usr/lib/jvm/java-17-openjdk*; do
		if [[ -x "$d/bin/java" ]]; then
			log "WARNING: no Temurin 25 JDK under /usr/lib/jvm; falling back to Java 17 ($d), which Keycloak 26.x deprecates"
			echo "$d"
			return
		fi
	done
	if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
		log "WARNING: no Temurin 25 or Java 17 under /usr/lib/jvm; using JAVA_HOME=$JAVA_HOME"
		echo "$JAVA_HOME"
		return
	fi
	log "ERROR: no JDK found (looked for /usr/lib/jvm/temurin-25*, Java 17, \$JAVA_HOME)"
	exit 1
}

fetch_and_unzip() {
	if [[ -x "$KC_HOME/bin/kc.sh" && -f "$KC_HOME/lib/quarkus-run.jar" ]]; then
		log "already unzipped: $KC_HOME"
		return
	fi
	command -v mvn >/dev/null || { log "ERROR: mvn not found (apt-get install -y maven)"; exit 1; }
	mkdir -p "$BIN_DIR"
	local tmp
	tmp="$(mktemp -d "$BIN_DIR/.keycloak-dl.XXXXXX")"
	CLEANUP+=("$tmp")
	log "fetching $ARTIFACT with mvn"
	# Run from an empty directory so no project pom gets in the way.
	(cd "$tmp" && mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp") >&2
	local zip="$tmp/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
	[[ -f "$zip" ]] || { log "ERROR: $zip not found after mvn dependency:copy"; exit 1; }
	log "unzipping into $BIN_DIR"
	mkdir -p "$tmp/x"
	if command -v unzip >/dev/null; then
		unzip -q "$zip" -d "$tmp/x"
	else
		python3 -m zipfile -e "$zip" "$tmp/x"
		chmod +x "$tmp/x/keycloak-$KEYCLOAK_VERSION"/bin/*.sh
	fi
	rm -rf "$KC_HOME"
	mv "$tmp/x/keycloak-$KEYCLOAK_VERSION" "$KC_HOME"
}

build() {
	local java_home="$1"
	local want="${BUILD_OPTS[*]}"
	if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
		log "already built with: $want"
		return
	fi
	log "running kc.sh build $want (JAVA_HOME=$java_home; takes ~40 s)"
	rm -f "$STAMP"
	local out
	out="$(mktemp)"
	CLEANUP+=("$out")
	if ! JAVA_HOME="$java_home" "$KC_HOME/bin/kc.sh" build "${BUILD_OPTS[@]}" >"$out" 2>&1; then
		tail -n 40 "$out" >&2
		log "ERROR: kc.sh build failed"
		exit 1
	fi
	echo "$want" >"$STAMP"
}

cmd="${1:-install}"
case "$cmd" in
install)
	java_home="$(detect_java)"
	fetch_and_unzip
	build "$java_home"
	echo "KEYCLOAK_JAVA_HOME=$java_home"
	echo "KEYCLOAK_HOME=$KC_HOME"
	;;
home)
	echo "$KC_HOME"
	;;
*)
	echo "usage: $0 install|home" >&2
	exit 2
	;;
esac
