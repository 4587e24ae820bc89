#!/usr/bin/env bash
# The local stand-in for python:3.11-slim-bookworm, for machines that cannot pull from a
# registry: Debian bookworm (minbase) with its own Python 3.11 (and libpython3.11, which
# Triton's python stub links), built from Debian's packages
# with mmdebstrap and imported as IMAGE (default sentiserve-base:bookworm). Skipped when
# IMAGE exists. Uses the host's apt sources and CA bundle (pip inside a build needs it).
#   DOCKER_HOST=... deploy/docker/base.sh [IMAGE]
set -euo pipefail
IMAGE="${1:-sentiserve-base:bookworm}"
DOCKER=/usr/bin/docker
if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: run \`make system\`" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources=""
for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list; do
    if [ -f "$candidate" ]; then sources="$candidate"; break; fi
done
[ -n "$sources" ] || { echo "no apt sources file found" >&2; exit 1; }
echo "building $IMAGE from Debian bookworm packages (mmdebstrap, $sources)" >&2
# Merged /usr by mmdebstrap's own hook (the usrmerge package would pull in perl, 50 MB);
# no manuals, translations or docs but the copyright files, as python:3.11-slim does.
mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,python3-venv,python3-pip,python-is-python3,libpython3.11,ca-certificates,passwd \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
    --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1"/etc/ssl/certs/ca-certificates.crt' \
    bookworm "$work/base.tar" "$sources" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
"$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    "$work/base.tar" "$IMAGE" >/dev/null
echo "$IMAGE: $("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')" >&2
