#!/usr/bin/env bash
# `make images`: the project's images, built on this machine with a private daemon
# (deploy/docker/engine.sh, stopped again afterwards if this script started it):
#   sentiserve:VERSION        the CPU serving image (deploy/docker/Dockerfile)
#   sentiserve-score:VERSION  the batch-scoring image the RayJob runs (EXTRAS=s3,score,ray)
#   sentiserve-triton:cpu-VERSION  Dockerfile.triton, unchanged, on a CPU stand-in for
#                             NVIDIA's base (Dockerfile.triton-cpu-base: the bundled
#                             tritonserver, python backend only): it serves the python form
#   sentiserve-s3:VERSION, sentiserve-prometheus:VERSION  moto's S3 and Prometheus, for the
#                             one-machine stack (deploy/compose, `make stack`)
# The Dockerfiles' public bases are used when they are present or can be pulled; otherwise
# the local Debian bookworm base (deploy/docker/base.sh) is built and passed in. The serving
# and scoring images install from a wheelhouse built here first (no index inside their
# builds); the build stage still fetches binutils (strip) from Debian, and the Triton,
# S3 and Prometheus images their packages, over the host's network. With
# --if-possible (what `make test` passes), a machine that cannot run a daemon skips this
# with a reason, and the container tests skip too.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
PUBLIC=$(sed -n 's/^ARG PYTHON_IMAGE=//p' deploy/docker/Dockerfile)

started=""
if [ "${1:-}" = "--if-possible" ] && [ "$(id -u)" != 0 ] \
    && ! { [ -n "${DOCKER_HOST:-}" ] && "$DOCKER" version >/dev/null 2>&1; }; then
    echo "images: skipped (a private Docker daemon needs root; set DOCKER_HOST to use one)" >&2
    exit 0
fi
if [ -z "${DOCKER_HOST:-}" ] || ! "$DOCKER" version >/dev/null 2>&1; then
    DOCKER_HOST=$(deploy/docker/engine.sh start)
    export DOCKER_HOST
    started=1
fi
trap '[ -z "$started" ] || deploy/docker/engine.sh stop' EXIT

base="$PUBLIC"
if ! "$DOCKER" image inspect "$base" >/dev/null 2>&1 \
    && ! timeout 30 "$DOCKER" pull --quiet "$base" >/dev/null 2>&1; then
    base=sentiserve-base:bookworm
    echo "cannot pull $PUBLIC: building on the local base $base" >&2
    deploy/docker/base.sh "$base"
fi

# The wheelhouse: sentiserve and everything the serving and scoring images install, as
# wheels built or fetched here, so that their builds reach no package index.
echo "filling the wheelhouse (deploy/docker/wheels)" >&2
rm -f deploy/docker/wheels/*.whl
python3 -m pip wheel --quiet --disable-pip-version-check --wheel-dir deploy/docker/wheels \
    ".[s3,load,score,ray]" pip==25.3

build() {  # build TAG DOCKERFILE [docker build arguments...]
    local tag=$1 file=$2
    shift 2
    echo "building $tag" >&2
    local start=$SECONDS
    "$DOCKER" build --quiet --network host --build-arg "PYTHON_IMAGE=$base" \
        -f "$file" -t "$tag" "$@" . >/dev/null
    local size
    size=$("$DOCKER" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')
    echo "$tag: $size, built in $((SECONDS - start)) s" >&2
}

build "sentiserve:$VERSION" deploy/docker/Dockerfile
build "sentiserve-score:$VERSION" deploy/docker/Dockerfile --build-arg EXTRAS=s3,score,ray
build sentiserve-triton-base:cpu deploy/docker/Dockerfile.triton-cpu-base \
    --build-arg "BASE_IMAGE=$base"
build "sentiserve-triton:cpu-$VERSION" deploy/docker/Dockerfile.triton \
    --build-arg TRITON_IMAGE=sentiserve-triton-base:cpu
build "sentiserve-s3:$VERSION" deploy/compose/Dockerfile.s3 --build-arg "BASE_IMAGE=$base"
build "sentiserve-prometheus:$VERSION" deploy/compose/Dockerfile.prometheus \
    --build-arg "BASE_IMAGE=$base"
