#!/usr/bin/env bash
# Build the tlsbridge sidecar image from deploy/Dockerfile without pulling from any registry:
#   1. wheels of every dependency into build/wheels (`pip wheel`, pinned to the versions in
#      .venv, i.e. the tested ones; pip's cache or PyPI provide them, and they are reused while
#      pyproject.toml and .venv stay the same), plus setuptools and wheel to build tlsbridge;
#   2. the base image: --base IMAGE, else the registry-free Debian 12 Python 3.11 image that
#      scripts/build-python-base.sh builds (cached);
#   3. DOCKER_BUILDKIT=0 docker build -f deploy/Dockerfile --build-arg BASE_IMAGE=... -t TAG .
#      (the classic builder: Debian's docker.io has no buildx).
#
# Usage: scripts/build-sidecar-image.sh [--base IMAGE] [--dns-plugins "rfc2136 cloudflare"] [TAG]
#   TAG defaults to $TLSBRIDGE_SIDECAR_IMAGE or tlsbridge:latest.
#   --dns-plugins (or $DNS_PLUGINS): certbot DNS plugins to add, passed on as the Dockerfile's
#   DNS_PLUGINS build argument; their wheels join build/wheels.
#   The wheels are built with the host's .venv Python: the base must have the same Python minor
#   version (3.11 for the default base and for python:3.11-slim-bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

base=""
plugins=${DNS_PLUGINS:-}
tag=${TLSBRIDGE_SIDECAR_IMAGE:-tlsbridge:latest}
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift 2 ;;
    --dns-plugins) plugins=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) tag=$1; shift ;;
  esac
done

start=$(date +%s.%N)
py=.venv/bin/python
wheels=build/wheels
mkdir -p "$wheels"

# 1. wheels ----------------------------------------------------------------------------------
req=$(mktemp) cons=$(mktemp)
trap 'rm -f "$req" "$cons"' EXIT
"$py" deploy/image-requirements.py pyproject.toml "$plugins" >"$req"
printf 'setuptools\nwheel\n' >>"$req"
"$py" -m pip freeze --exclude-editable --all 2>/dev/null | grep -v '^pip==' >"$cons" || true
# .stamp: line 1 the pinned versions (a change empties the folder), then one line per
# requirement set already in it (with and without plugins share the folder: no rebuild when
# switching between them).
pins=$(sha256sum <"$cons" | cut -d' ' -f1)
stamp=$(sha256sum <"$req" | cut -d' ' -f1)
if [ "$(head -1 "$wheels/.stamp" 2>/dev/null)" != "$pins" ]; then
  rm -f "$wheels"/*.whl
  echo "$pins" >"$wheels/.stamp"
fi
if grep -qx "$stamp" <(tail -n +2 "$wheels/.stamp") && ls "$wheels"/*.whl >/dev/null 2>&1; then
  echo "sidecar image: wheels in $wheels up to date"
else
  if ! "$py" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$wheels" -r "$req" -c "$cons" \
       >"$wheels/.pip.log" 2>&1; then
    cat "$wheels/.pip.log" >&2
    exit 1
  fi
  echo "$stamp" >>"$wheels/.stamp"
  echo "sidecar image: $(ls "$wheels"/*.whl | wc -l) wheels in $wheels"
fi

# 2. base ------------------------------------------------------------------------------------
if [ -z "$base" ]; then
  base=${TLSBRIDGE_PYTHON_IMAGE:-tlsbridge-test/python:3.11}
  scripts/build-python-base.sh "$base"
fi

# 3. image -----------------------------------------------------------------------------------
log=$(mktemp)
if ! DOCKER_BUILDKIT=0 docker build --force-rm -f deploy/Dockerfile --build-arg "BASE_IMAGE=$base" \
     --build-arg "DNS_PLUGINS=$plugins" --build-arg "TLSBRIDGE_IMAGE=$tag" -t "$tag" . >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
size=$(docker image inspect -f '{{.Size}}' "$tag")
end=$(date +%s.%N)
awk -v i="$tag" -v b="$base" -v s="$size" -v a="$start" -v e="$end" \
  'BEGIN{printf "sidecar image: built %s on %s (%.1f MB) in %.1f s\n", i, b, s/1e6, e-a}'
[ -z "$plugins" ] || echo "sidecar image: with the certbot DNS plugins: $plugins"
