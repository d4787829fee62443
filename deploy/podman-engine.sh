#!/usr/bin/env bash
# A Docker-API engine for machines without a Docker daemon: Debian's podman, as root, serving the
# Docker API on a project-local socket. Idempotent: every step is skipped when already done.
#
#   deploy/podman-engine.sh start    install podman if needed, build the base image, serve the API
#   deploy/podman-engine.sh stop     stop serving the API
#   deploy/podman-engine.sh status   say whether the API answers
#
# `start` ends by printing the two variables the docker backend reads, ready for `eval`:
#   DOCKER_HOST=unix://.../podman.sock        where the engine's API is
#   ICHAOS_BASE_IMAGE=ichaos-base:bookworm    the base image builds use (nothing can be pulled here)
#
# Why each step (learned on machines like the CI ones): crun fails on their hybrid cgroups, so the
# runtime is runc; the engine's default ulimits are refused, so they are set explicitly; no image
# registry is reachable, so the base image is made with debootstrap from Debian's packages (the
# tarball is cached) and imported.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE_DIR="${ICHAOS_ENGINE_DIR:-$ROOT/.ichaos/engine}"
SOCK="$ENGINE_DIR/podman.sock"
# The imported base image's name (not ICHAOS_BASE_IMAGE, which says what builds use, and may
# name an image this must not shadow).
BASE_IMAGE="${ICHAOS_ENGINE_BASE_IMAGE:-ichaos-base:bookworm}"
BASE_TAR="$ENGINE_DIR/base-bookworm.tar"
MIRROR="${ICHAOS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What every image of ours needs from the base: Python with venv, CA certificates, an init.
BASE_PACKAGES="python3,python3-venv,ca-certificates,tini"

export CONTAINERS_CONF="$ENGINE_DIR/containers.conf"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

answers() {
    [[ -S "$SOCK" ]] && curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}

# What the engine executes, and the Debian package that brings it. Checked by the command, not
# by the package's dependencies: podman only suggests iptables, yet netavark (its network backend)
# runs iptables and ip6tables for every network, so a container on a network cannot start
# without them ("netavark: No such file or directory").
REQUIRED=(
    "podman:podman"
    "runc:runc"
    "conmon:conmon"
    "/usr/lib/podman/netavark:netavark"
    "/usr/lib/podman/aardvark-dns:aardvark-dns"
    "catatonit:catatonit"
    "iptables:iptables"
    "ip6tables:iptables"
    "debootstrap:debootstrap"
    "curl:curl"
)

missing_packages() {
    local entry program package seen=" "
    for entry in "${REQUIRED[@]}"; do
        program="${entry%%:*}" package="${entry#*:}"
        if [[ "$program" == /* ]]; then [[ -x "$program" ]] && continue
        else command -v "$program" >/dev/null && continue; fi
        [[ "$seen" == *" $package "* ]] || seen+="$package "
    done
    # Compose, to check deploy/compose.yaml (`docker compose config`); v1 where v2 is missing.
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
        seen+="docker-compose "
    fi
    echo $seen
}

install_packages() {
    local missing
    read -r -a missing <<<"$(missing_packages)"
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "the docker backend needs a Docker-API engine: install ${missing[*]} (Debian:
       apt-get install ${missing[*]}) and re-run as root, or start Docker and set DOCKER_HOST"
    fi
    say "installing ${missing[*]} from Debian's packages"
    mkdir -p "$ENGINE_DIR"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"; } >"$ENGINE_DIR/apt.log" 2>&1; then
        tail -n 20 "$ENGINE_DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed (log: $ENGINE_DIR/apt.log)"
    fi
    read -r -a missing <<<"$(missing_packages)"
    if [[ ${#missing[@]} -ne 0 ]]; then
        die "installed, yet still missing what ${missing[*]} should provide (log: $ENGINE_DIR/apt.log)"
    fi
}

write_conf() {
    mkdir -p "$ENGINE_DIR"
    local tmp="$CONTAINERS_CONF.tmp"
    cat >"$tmp" <<'EOF'
# Written by deploy/podman-engine.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"

[network]
# Named, not left to podman's guess (which depends on what its storage already holds).
network_backend = "netavark"
EOF
    mv -f "$tmp" "$CONTAINERS_CONF"
}

base_image() {
    if podman image exists "$BASE_IMAGE"; then
        return
    fi
    if [[ ! -s "$BASE_TAR" ]]; then
        say "building the base image's root file system with debootstrap (once; cached in $BASE_TAR)"
        # Global, not local: the EXIT trap runs after this function returns. A failure anywhere
        # below leaves nothing behind: neither the folder nor a partial tarball.
        ROOTFS="$(mktemp -d "$ENGINE_DIR/rootfs.XXXXXX")"
        trap 'rm -rf "$ROOTFS" "$BASE_TAR.tmp"' EXIT
        local dir="$ROOTFS"
        if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$dir" "$MIRROR" \
                >"$ENGINE_DIR/debootstrap.log" 2>&1; then
            tail -n 20 "$ENGINE_DIR/debootstrap.log" >&2
            die "debootstrap failed (log: $ENGINE_DIR/debootstrap.log)"
        fi
        rm -rf "$dir/var/cache/apt/archives"/*.deb "$dir/var/lib/apt/lists"/*
        tar -C "$dir" -cf "$BASE_TAR.tmp" .
        mv -f "$BASE_TAR.tmp" "$BASE_TAR"
        rm -rf "$dir"
        trap - EXIT
    fi
    say "importing $BASE_TAR as $BASE_IMAGE"
    podman import --quiet "$BASE_TAR" "$BASE_IMAGE" >/dev/null
}

serve() {
    if answers; then
        return
    fi
    rm -f "$SOCK"
    say "serving the Docker API on unix://$SOCK (log: $ENGINE_DIR/service.log)"
    # setsid: the service outlives this script and the shell that ran it.
    setsid podman system service --time=0 "unix://$SOCK" >"$ENGINE_DIR/service.log" 2>&1 \
        </dev/null &
    echo $! >"$ENGINE_DIR/service.pid"
    local i
    for i in $(seq 1 100); do
        answers && return
        sleep 0.1
    done
    tail -n 20 "$ENGINE_DIR/service.log" >&2
    die "podman system service did not answer on $SOCK within 10 s"
}

start() {
    install_packages
    write_conf
    base_image
    serve
    # Quoted for the shell: `eval "$(deploy/podman-engine.sh start)"` sets both.
    printf 'DOCKER_HOST=%q\nICHAOS_BASE_IMAGE=%q\n' "unix://$SOCK" "$BASE_IMAGE"
}

stop() {
    if [[ -f "$ENGINE_DIR/service.pid" ]]; then
        kill "$(cat "$ENGINE_DIR/service.pid")" 2>/dev/null || true
        rm -f "$ENGINE_DIR/service.pid" "$SOCK"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status)
        if answers; then echo "the Docker API answers on unix://$SOCK"; else
            echo "no engine on unix://$SOCK: run deploy/podman-engine.sh start"; exit 1; fi ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
