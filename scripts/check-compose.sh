#!/usr/bin/env bash
# Validate the Docker path without a Docker engine: docker-compose.yml,
# debezium/*.json, and that both agree with the outbox table in migrations/.
#
# Usage: scripts/check-compose.sh
#
# Prints one line per check (ok / FAIL / skip) and exits 1 if any failed.
#   * `docker compose config -q`, for the default and the debezium profile,
#     where the Compose v2 plugin is installed (it needs no daemon); skipped
#     where it is not, as on this project's machines.
#   * The Compose Specification's JSON schema (the copy vendored in
#     check-jsonschema), which catches misspelt or misplaced keys.
#   * Rules neither enforces: services and profiles, depends_on targets,
#     pinned image tags, quoted ports, declared volumes, the binlog flags
#     Debezium needs, the connector's routing columns against the outbox
#     table, its headers against the embedded relay's, and the settings the
#     compose file and the connector must share.
#
# The validator (pinned) is pip-installed on first use into
# .stack/compose-check/ (git-ignored); later runs reuse it and take ~1 s.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/.stack/compose-check"
REQUIREMENTS=(check-jsonschema==0.39.0 ruamel.yaml==0.19.1)
COMPOSE="$ROOT/docker-compose.yml"

failures=0
pass() { printf 'ok    %s\n' "$1"; }
fail() {
    printf 'FAIL  %s\n' "$1"
    failures=$((failures + 1))
}
skip() { printf 'skip  %s\n' "$1"; }

# Creates (or re-creates, when REQUIREMENTS changed) the validator's venv.
ensure_venv() {
    local stamp="$VENV/.requirements"
    if [[ -x $VENV/bin/python && -f $stamp && "$(<"$stamp")" == "${REQUIREMENTS[*]}" ]]; then
        return 0
    fi
    mkdir -p "$ROOT/.stack"
    exec 9>"$ROOT/.stack/compose-check.lock"
    flock -w 300 9 || {
        echo "check-compose: another run holds .stack/compose-check.lock" >&2
        return 1
    }
    # Another run may have finished the install while we waited.
    if [[ -x $VENV/bin/python && -f $stamp && "$(<"$stamp")" == "${REQUIREMENTS[*]}" ]]; then
        exec 9>&-
        return 0
    fi
    echo "check-compose: installing ${REQUIREMENTS[*]} into .stack/compose-check/" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 || {
        echo "check-compose: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
        return 1
    }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "${REQUIREMENTS[@]}" >&2 || return 1
    printf '%s\n' "${REQUIREMENTS[*]}" >"$stamp"
    exec 9>&-
}

# ------------------------------------------------------- docker compose ----
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    for profile in "" debezium; do
        label="docker compose config -q (${profile:-default} profile)"
        args=(compose --project-directory "$ROOT" -f "$COMPOSE")
        [[ -n $profile ]] && args+=(--profile "$profile")
        if output="$(docker "${args[@]}" config -q 2>&1)"; then
            pass "$label"
        else
            fail "$label: ${output//$'\n'/ }"
        fi
    done
else
    skip "docker compose config: the Compose v2 plugin is not installed here"
fi

# ------------------------------------------------- compose-spec schema ----
if ! ensure_venv; then
    fail "install ${REQUIREMENTS[*]} into .stack/compose-check/"
    exit 1
fi
if output="$("$VENV/bin/python" -m check_jsonschema --builtin-schema vendor.compose-spec \
    "$COMPOSE" 2>&1)"; then
    pass "docker-compose.yml matches the Compose Specification schema"
else
    fail "docker-compose.yml vs the Compose Specification schema: ${output//$'\n'/ }"
fi

# ----------------------------------------------------- structural rules ----
# The Python part prints its own ok/FAIL lines; a non-zero exit means it crashed.
set +e
output="$("$VENV/bin/python" - "$ROOT" 2>&1 <<'PY'
import glob
import json
import os
import re
import sys

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

root = sys.argv[1]


def check(ok, label, detail=""):
    if ok:
        print(f"ok    {label}")
    else:
        print(f"FAIL  {label}" + (f": {detail}" if detail else ""))
    return ok


def default_of(value, var):
    """The default in '${VAR:-default}' inside value, or None."""
    m = re.search(r"\$\{" + re.escape(var) + r":?-([^}]*)\}", str(value))
    return m.group(1) if m else None


def env_map(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


# ---- docker-compose.yml
try:
    # Round-trip loader with quotes preserved: tells "8087:8087" from 8087:8087.
    yaml = YAML()
    yaml.preserve_quotes = True
    with open(os.path.join(root, "docker-compose.yml")) as f:
        compose = yaml.load(f)
    check(isinstance(compose, dict), "docker-compose.yml parses as YAML")
except Exception as error:
    check(False, "docker-compose.yml parses as YAML", str(error))
    sys.exit(0)

services = compose.get("services") or {}
expected = {"mariadb", "kafka", "connect", "connect-init", "payment-service"}
check(expected <= set(services), "services " + ", ".join(sorted(expected)) + " exist",
      "missing: " + ", ".join(sorted(expected - set(services))))

profiles = {name: set(svc.get("profiles") or []) for name, svc in services.items()}
check(all(not profiles.get(n) for n in ("mariadb", "kafka", "payment-service"))
      and all(profiles.get(n) == {"debezium"} for n in ("connect", "connect-init")),
      "connect and connect-init only in the debezium profile, the rest always on",
      str({n: sorted(p) for n, p in profiles.items()}))

problems = []
for name, svc in services.items():
    deps = svc.get("depends_on") or {}
    for dep, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
        if dep not in services:
            problems.append(f"{name} -> {dep} (no such service)")
            continue
        if profiles[dep] and not (profiles[name] and profiles[name] <= profiles[dep]):
            problems.append(f"{name} -> {dep} (only in profiles {sorted(profiles[dep])})")
        condition = (spec or {}).get("condition", "service_started")
        if condition == "service_healthy" and not services[dep].get("healthcheck"):
            problems.append(f"{name} waits for {dep} healthy, but {dep} has no healthcheck")
check(not problems, "every depends_on names a service of the same profile (with a healthcheck when waited for healthy)",
      "; ".join(problems))

problems = []
for name, svc in services.items():
    image = svc.get("image")
    if image is None:
        if "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        continue
    last = str(image).rsplit("/", 1)[-1]
    if "@sha256:" in last:
        continue
    if ":" not in last:
        problems.append(f"{name}: {image} (no tag)")
    elif last.rsplit(":", 1)[1] in ("latest", ""):
        problems.append(f"{name}: {image}")
check(not problems, "every image is pinned to a tag (none is latest)", "; ".join(problems))

problems = []
for name, svc in services.items():
    for port in svc.get("ports") or []:
        # Unquoted, "22:22" is a base-60 number to YAML 1.1 parsers.
        if not isinstance(port, (DoubleQuotedScalarString, SingleQuotedScalarString, dict)):
            problems.append(f"{name}: {port}")
check(not problems, "every published port is a quoted string", "; ".join(problems))

declared = set(compose.get("volumes") or {})
problems = []
for name, svc in services.items():
    for vol in svc.get("volumes") or []:
        source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":", 1)[0]
        if source and not source.startswith((".", "/", "~", "$")) and source not in declared:
            problems.append(f"{name}: {source}")
check(not problems, "every named volume is declared", "; ".join(problems))

mariadb = services.get("mariadb", {})
mariadb_env = env_map(mariadb)
command = mariadb.get("command") or []
command = command.split() if isinstance(command, str) else [str(c) for c in command]
needed = ["--log-bin", "--binlog-format=ROW", "--binlog-row-image=FULL", "--server-id"]
missing = [flag for flag in needed
           if not any(c == flag or c.startswith(flag + "=") for c in command)]
check(not missing, "mariadb writes a row-based, full-image binlog with a server id",
      "missing " + ", ".join(missing))
mariadb_server_id = next((c.split("=", 1)[1] for c in command if c.startswith("--server-id=")), None)
root_password = default_of(mariadb_env.get("MARIADB_ROOT_PASSWORD"), "MARIADB_ROOT_PASSWORD")
database = mariadb_env.get("MARIADB_DATABASE")

app_env = env_map(services.get("payment-service", {}))
contract = ["PAYMENT__DATABASE__URL", "PAYMENT__KAFKA__BROKERS", "PAYMENT__GATEWAY",
            "PAYMENT__TOSS__SECRET_KEY", "PAYMENT__OUTBOX__RELAY", "PAYMENT__LOG__FORMAT"]
missing = [k for k in contract if k not in app_env]
check(not missing, "payment-service sets " + ", ".join(contract), "missing " + ", ".join(missing))
secret = app_env.get("PAYMENT__TOSS__SECRET_KEY") or ""
check(re.fullmatch(r"\$\{[A-Z0-9_]+(:?-)?\}", secret) is not None,
      "the Toss secret key comes from the environment, never from the file", repr(secret))
url = app_env.get("PAYMENT__DATABASE__URL") or ""
m = re.fullmatch(r"mysql://([^:@]+):(.*)@([^:/]+):(\d+)/([^/?]+)", url)
check(m is not None and m.group(3) in services and m.group(5) == database
      and default_of(m.group(2), "MARIADB_ROOT_PASSWORD") == root_password,
      "payment-service's database URL points at the mariadb service with its password and database",
      url)
relay = default_of(app_env.get("PAYMENT__OUTBOX__RELAY"), "PAYMENT_OUTBOX_RELAY")
check(relay == "embedded", "the default stack uses the embedded relay", repr(relay))

connect_env = env_map(services.get("connect", {}))
init = services.get("connect-init", {})
mounts = [str(v) for v in init.get("volumes") or []]
script = " ".join(str(c) for c in (init.get("command") or []))
posted = re.findall(r"@/debezium/([\w.-]+\.json)", script)
check(any(v.startswith("./debezium:/debezium") and v.endswith(":ro") for v in mounts)
      and posted and all(os.path.isfile(os.path.join(root, "debezium", p)) for p in posted),
      "connect-init mounts ./debezium read-only and registers a file that exists",
      f"mounts={mounts} files={posted}")

# ---- debezium/*.json
connectors = {}
for path in sorted(glob.glob(os.path.join(root, "debezium", "*.json"))):
    rel = os.path.relpath(path, root)
    try:
        with open(path) as f:
            config = json.load(f)
    except Exception as error:
        check(False, f"{rel} parses as JSON", str(error))
        continue
    flat = isinstance(config, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.items())
    if check(flat, f"{rel} is a flat JSON object of string values (PUT /connectors/NAME/config)"):
        connectors[rel] = config
check(bool(connectors), "debezium/ holds at least one connector config")

# ---- the outbox table, as the migrations leave it
def outbox_columns():
    columns = []
    for path in sorted(glob.glob(os.path.join(root, "migrations", "*.sql"))):
        with open(path) as f:
            sql = re.sub(r"--[^\n]*", "", f.read())
        for m in re.finditer(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?outbox`?\s*\(", sql, re.I):
            depth, i = 1, m.end()
            while depth and i < len(sql):
                depth += {"(": 1, ")": -1}.get(sql[i], 0)
                i += 1
            body, part, depth = sql[m.end():i - 1], "", 0
            parts = []
            for ch in body:  # split on top-level commas
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if ch == "," and depth == 0:
                    parts.append(part)
                    part = ""
                else:
                    part += ch
            parts.append(part)
            columns = [p.split()[0].strip("`") for p in (p.strip() for p in parts) if p
                       and p.split()[0].upper() not in
                       ("CONSTRAINT", "PRIMARY", "KEY", "UNIQUE", "INDEX", "FOREIGN", "CHECK", "FULLTEXT")]
        for m in re.finditer(r"ALTER\s+TABLE\s+`?outbox`?\s+(.*?);", sql, re.I | re.S):
            for a in re.finditer(r"ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?", m.group(1), re.I):
                if a.group(1).upper() not in ("CONSTRAINT", "PRIMARY", "KEY", "UNIQUE", "INDEX", "FOREIGN", "CHECK"):
                    columns.append(a.group(1))
            for d in re.finditer(r"DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?`?(\w+)`?", m.group(1), re.I):
                if d.group(1) in columns:
                    columns.remove(d.group(1))
            for r in re.finditer(r"RENAME\s+COLUMN\s+`?(\w+)`?\s+TO\s+`?(\w+)`?", m.group(1), re.I):
                columns = [r.group(2) if c == r.group(1) else c for c in columns]
    return columns


columns = outbox_columns()
check(bool(columns), "migrations/ create the outbox table", "no CREATE TABLE outbox found")

# Header keys the embedded relay sends (crates/infra/src/outbox.rs).
relay_src = os.path.join(root, "crates", "infra", "src", "outbox.rs")
relay_headers = set()
if os.path.isfile(relay_src):
    with open(relay_src) as f:
        relay_headers = set(re.findall(r'key:\s*"([^"]+)"', f.read()))

for rel, cfg in connectors.items():
    if cfg.get("transforms.outbox.type") != "io.debezium.transforms.outbox.EventRouter":
        continue
    t = "transforms.outbox."
    placement = [p.split(":") for p in cfg.get(t + "table.fields.additional.placement", "").split(",") if p]
    used = {
        "event id": cfg.get(t + "table.field.event.id", "id"),
        "event key": cfg.get(t + "table.field.event.key", "aggregateid"),
        "payload": cfg.get(t + "table.field.event.payload", "payload"),
        "route by": cfg.get(t + "route.by.field", "aggregatetype"),
    }
    used.update({f"header {p[-1]}": p[0] for p in placement})
    missing = {k: v for k, v in used.items() if v not in columns}
    check(columns and not missing, f"{rel}: routing fields are outbox columns ("
          + ", ".join(f"{k}={v}" for k, v in used.items()) + ")",
          f"not in outbox {columns}: {missing}")
    check(all(len(p) in (2, 3) and p[1] == "header" for p in placement),
          f"{rel}: additional outbox fields go to headers only (value = payload as is)", str(placement))
    headers = {"id"} | {p[-1] for p in placement}
    if relay_headers:
        check(headers == relay_headers,
              f"{rel}: headers {sorted(headers)} = the embedded relay's",
              f"embedded relay sends {sorted(relay_headers)}")
    else:
        print(f"skip  {rel}: embedded relay headers (no key literals in crates/infra/src/outbox.rs)")
    wire = {
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
        t + "table.expand.json.payload": "false",
        t + "route.topic.replacement": "${routedByValue}",
        "extended.headers.enabled": "false",
        "tombstones.on.delete": "false",
    }
    wrong = {k: cfg.get(k) for k, v in wire.items() if cfg.get(k) != v}
    check(not wrong, f"{rel}: topic = aggregatetype, key and value as text, no extra headers or tombstones",
          str(wrong))
    table = cfg.get("table.include.list", "")
    problems = []
    if cfg.get("database.hostname") not in services:
        problems.append(f"database.hostname={cfg.get('database.hostname')}")
    if cfg.get("database.port") != "3306":
        problems.append(f"database.port={cfg.get('database.port')}")
    if table != f"{database}.outbox" or cfg.get("database.include.list") != database:
        problems.append(f"database.include.list={cfg.get('database.include.list')} table.include.list={table}")
    if cfg.get("database.user") == "root" and cfg.get("database.password") != root_password:
        problems.append("database.password differs from the compose default MARIADB_ROOT_PASSWORD")
    if cfg.get("schema.history.internal.kafka.bootstrap.servers") != connect_env.get("BOOTSTRAP_SERVERS"):
        problems.append("schema history bootstrap servers differ from connect's BOOTSTRAP_SERVERS")
    if not cfg.get("database.server.id") or cfg.get("database.server.id") == mariadb_server_id:
        problems.append(f"database.server.id={cfg.get('database.server.id')} (mariadb's is {mariadb_server_id})")
    check(not problems, f"{rel}: agrees with docker-compose.yml (host, database, password, brokers, server id)",
          "; ".join(problems))

PY
)"
status=$?
set -e
printf '%s\n' "$output"
failures=$((failures + $(grep -c '^FAIL' <<<"$output" || true)))
if ((status != 0)); then
    fail "structural checks stopped early (exit $status)"
fi

if ((failures > 0)); then
    echo "check-compose: $failures check(s) failed" >&2
    exit 1
fi
echo "check-compose: all checks passed"
