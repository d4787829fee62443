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
# tarball is cached) and imported; Debian 12's netavark loses a network's gateway for up to a
# minute when a container restarts (see network_helpers), so newer netavark and aardvark-dns are
# built from crates.io (once, cached) and podman is pointed at them.
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
# netavark and aardvark-dns built for the engine where the system's netavark is older than
# FIXED_NETAVARK: pinned, one version for both, as podman's releases pair them.
HELPERS_VERSION="1.14.0"
FIXED_NETAVARK="1.9.0"
HELPERS="$ENGINE_DIR/helpers"
SYSTEM_NETAVARK=/usr/lib/podman/netavark

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

apt_install() {
    mkdir -p "$ENGINE_DIR"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "$@"; } >"$ENGINE_DIR/apt.log" 2>&1; then
        tail -n 20 "$ENGINE_DIR/apt.log" >&2
        die "apt-get install $* failed (log: $ENGINE_DIR/apt.log)"
    fi
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
    apt_install "${missing[@]}"
    read -r -a missing <<<"$(missing_packages)"
    if [[ ${#missing[@]} -ne 0 ]]; then
        die "installed, yet still missing what ${missing[*]} should provide (log: $ENGINE_DIR/apt.log)"
    fi
}

# "1.4.0" from "netavark 1.4.0"; empty when the program is absent or cannot say.
version_of() {
    { "$1" --version 2>/dev/null || true; } | awk '{print $2; exit}'
}

older_than() {  # older_than A B: version A sorts before version B
    [[ "$1" != "$2" && "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" == "$1" ]]
}

helpers_built() {
    [[ "$(version_of "$HELPERS/bin/netavark")" == "$HELPERS_VERSION" &&
       "$(version_of "$HELPERS/bin/aardvark-dns")" == "$HELPERS_VERSION" ]]
}

# Why: netavark before 1.9 leaves a network's bridge with the kernel's default MAC, the lowest of
# the veths attached to it, so a container that starts or stops can change the gateway's MAC. The
# other containers keep the old one in their ARP caches while the entry is REACHABLE (15 to 45 s,
# then some seconds of probes), and what they send to the gateway is lost meanwhile: DNS queries
# to aardvark-dns, replies to the host's connections through published ports. Seen here as a
# compose stack whose model server answered its health check after a restart while every request
# through its router timed out for the rest of the run (containers/netavark#833 pins the MAC, in
# 1.9). aardvark-dns before 1.11 also closes and reopens its sockets on every reload, that is at
# every container start and stop (containers/aardvark-dns#389).
network_helpers() {
    local system crate cargo
    system="$(version_of "$SYSTEM_NETAVARK")"
    if [[ -n "$system" ]] && ! older_than "$system" "$FIXED_NETAVARK"; then
        return
    fi
    helpers_built && return
    # rustup's place, for a PATH without it (a CI job's, say).
    cargo="$(command -v cargo || true)"
    [[ -z "$cargo" && -x "$HOME/.cargo/bin/cargo" ]] && cargo="$HOME/.cargo/bin/cargo"
    if [[ -z "$cargo" ]]; then
        say "WARNING: netavark ${system:-?} loses a network's gateway for up to a minute when a" \
            "container restarts, and there is no cargo to build $HELPERS_VERSION: a run that" \
            "restarts containers may see every request time out after the restart"
        return
    fi
    if ! command -v protoc >/dev/null; then  # netavark's build compiles its protobuf API
        say "installing protobuf-compiler from Debian's packages (netavark's build needs protoc)"
        if ! (apt_install protobuf-compiler); then
            say "WARNING: without protoc, netavark $HELPERS_VERSION cannot be built: the engine" \
                "keeps netavark ${system:-?}, which loses the gateway on restarts"
            return
        fi
    fi
    say "building netavark and aardvark-dns $HELPERS_VERSION from crates.io (once, some minutes;" \
        "log: $ENGINE_DIR/helpers.log): netavark ${system:-?} loses the gateway on restarts"
    mkdir -p "$ENGINE_DIR"
    : >"$ENGINE_DIR/helpers.log"
    # Global, as in base_image: the EXIT trap removes a half-done build however this ends.
    BUILD="$(mktemp -d "$ENGINE_DIR/helpers-build.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
    for crate in netavark aardvark-dns; do
        # --locked: each release's own Cargo.lock (with today's dependencies 1.14.0 no longer
        # compiles); one target folder, so the crates both use are built once.
        if ! CARGO_TARGET_DIR="$BUILD/target" "$cargo" install --locked --root "$BUILD/root" \
                "$crate" --version "$HELPERS_VERSION" >>"$ENGINE_DIR/helpers.log" 2>&1; then
            tail -n 20 "$ENGINE_DIR/helpers.log" >&2
            say "WARNING: building $crate $HELPERS_VERSION failed (log: $ENGINE_DIR/helpers.log):" \
                "the engine keeps netavark ${system:-?}, which loses the gateway on restarts"
            rm -rf "$BUILD"
            trap - EXIT
            return
        fi
    done
    rm -rf "$HELPERS"
    mkdir -p "$HELPERS/bin"
    mv "$BUILD/root/bin/netavark" "$BUILD/root/bin/aardvark-dns" "$HELPERS/bin/"
    rm -rf "$BUILD"
    trap - EXIT
    helpers_built || die "the netavark and aardvark-dns built in $HELPERS do not say $HELPERS_VERSION"
}

# The engine's containers.conf; succeeds when this changed it.
write_conf() {
    mkdir -p "$ENGINE_DIR"
    local tmp="$CONTAINERS_CONF.tmp" dirs=""
    if helpers_built; then
        # Every helper is looked up in order: ours, then podman's own folders (catatonit, ...).
        dirs="helper_binaries_dir = [\"$HELPERS/bin\", \"/usr/local/libexec/podman\","
        dirs+=" \"/usr/local/lib/podman\", \"/usr/libexec/podman\", \"/usr/lib/podman\"]"
    fi
    cat >"$tmp" <<EOF
# Written by deploy/podman-engine.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
$dirs

[network]
# Named, not left to podman's guess (which depends on what its storage already holds).
network_backend = "netavark"
EOF
    if cmp -s "$tmp" "$CONTAINERS_CONF"; then
        rm -f "$tmp"
        return 1
    fi
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
    network_helpers
    # The API service reads containers.conf once, when it starts.
    if write_conf && answers; then
        say "containers.conf changed: restarting the API service"
        stop
    fi
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
