#!/usr/bin/env bash
# Lint docker-compose.yml (and docker/*.yml, its local-image override) without
# a Docker engine: the Compose Specification's JSON schema (the copy vendored
# in check-jsonschema) catches misspelt or misplaced keys; where a docker CLI
# is on PATH, the Compose v2 plugin is installed when missing
# (`scripts/docker.sh plugin`: it needs no daemon) and `docker compose
# config -q` runs too, for the default and the debezium profile.
#
# Usage: scripts/check-compose.sh
#
# The connector's contract with the outbox table and the embedded relay is
# checked in Rust, against the migrated schema: tests/tests/contracts.rs.
#
# The validator (pinned) is pip-installed on first use into
# .stack/compose-check/ (git-ignored); later runs reuse it and take ~1 s.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/.stack/compose-check"
VALIDATOR=check-jsonschema==0.39.0
COMPOSE="$ROOT/docker-compose.yml"

# The venv is (re)made when missing or when VALIDATOR changed; flock keeps
# concurrent first runs from installing over each other.
if [[ "$(cat "$VENV/.installed" 2>/dev/null)" != "$VALIDATOR" ]]; then
    mkdir -p "$ROOT/.stack"
    exec 9>"$ROOT/.stack/compose-check.lock"
    flock -w 300 9
    if [[ "$(cat "$VENV/.installed" 2>/dev/null)" != "$VALIDATOR" ]]; then
        echo "check-compose: installing $VALIDATOR into .stack/compose-check/" >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$VALIDATOR"
        echo "$VALIDATOR" >"$VENV/.installed"
    fi
    exec 9>&-
fi

shopt -s nullglob
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE" "$ROOT"/docker/*.yml

if command -v docker >/dev/null 2>&1 &&
    { docker compose version >/dev/null 2>&1 || "$ROOT/scripts/docker.sh" plugin; }; then
    # config FILE...: resolves the files for the default and debezium profiles.
    config() {
        local -a args=(compose --project-directory "$ROOT")
        for file in "$@"; do args+=(-f "$file"); done
        docker "${args[@]}" config -q
        docker "${args[@]}" --profile debezium config -q
    }
    config "$COMPOSE"
    for override in "$ROOT"/docker/*.yml; do config "$COMPOSE" "$override"; done
    echo "check-compose: docker compose config -q: ok (default and debezium profiles, alone and with each docker/*.yml)"
else
    echo "check-compose: docker compose config: skipped (no docker CLI, or no Compose plugin to be had)"
fi
