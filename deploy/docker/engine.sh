#!/usr/bin/env bash
# A private Docker daemon for `make images` and the container tests: its socket, state and
# log live in .docker/ (ignored), so it neither needs nor touches a system daemon.
#   deploy/docker/engine.sh start   start it unless it answers already (prints DOCKER_HOST)
#   deploy/docker/engine.sh stop    stop it (images stay in .docker/data for the next start)
# Root only: dockerd needs it. Debian's docker.io (20.10) is used, with BuildKit.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE="$PWD/.docker"
SOCK="unix://$STATE/docker.sock"
export DOCKER_HOST="$SOCK"

answers() { /usr/bin/docker version >/dev/null 2>&1; }

case "${1:-}" in
start)
    mkdir -p "$STATE"
    if answers; then echo "$SOCK"; exit 0; fi
    if ! command -v dockerd >/dev/null || [ ! -x /usr/bin/docker ]; then
        echo "dockerd is missing: run \`make system\` (Debian's docker.io)" >&2
        exit 1
    fi
    dockerd --host "$SOCK" --data-root "$STATE/data" --exec-root "$STATE/exec" \
        --pidfile "$STATE/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
        >"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 1 150); do
        if answers; then echo "$SOCK"; exit 0; fi
        sleep 0.2
    done
    echo "dockerd did not answer in 30 s; see $STATE/dockerd.log" >&2
    tail -5 "$STATE/dockerd.log" >&2 || true
    exit 1
    ;;
stop)
    if [ -f "$STATE/dockerd.pid" ]; then
        pid=$(cat "$STATE/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
