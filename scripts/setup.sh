#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) for tlsbridge's tests. Idempotent and quick when
# everything is already there; prints one line per step.
#   1. apt packages: docker.io, nginx-light (the nginx binary for the test image), openssl,
#      curl, busybox-static (shell inside the test images), python3-venv, chromium (headless
#      screenshots of the sidecar's status page), systemd (systemd-analyze verifies the units)
#   2. .venv, and `pip install -e '.[test]'` when pyproject.toml exists and changed
#   3. tools/trixie: Debian 13's pebble 2.6 (with ARI) + docker-compose, via fetch-trixie.sh
#   4. dockerd, started in the background (log: tools/dockerd.log) unless `docker info` works
#   5. the nginx test image (scripts/build-nginx-image.sh; rebuilt only when missing)
#   6. tools/bind9: Debian 12's bind9 `named` for the DNS-01 tests, unpacked with `dpkg -x` (its
#      libraries, bind9-libs, come with step 1): the package is never installed, so no `bind` user,
#      no named.service, nothing started; the tests run named in their own folder on free ports
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export DEBIAN_FRONTEND=noninteractive

# 1. apt packages ---------------------------------------------------------------------
pkgs=(docker.io nginx-light openssl curl busybox-static python3-venv chromium systemd bind9-libs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "apt: all present (${pkgs[*]})"
else
  echo "apt: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. python venv ------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  echo "venv: created .venv"
else
  echo "venv: .venv present"
fi
if [ -f pyproject.toml ]; then
  stamp=.venv/.tlsbridge-pyproject.sha256
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "pip: pyproject.toml unchanged since last install"
  else
    .venv/bin/pip install -q -e '.[test]'
    echo "$want" >"$stamp"
    echo "pip: installed -e '.[test]'"
  fi
else
  echo "pip: no pyproject.toml yet, skipped"
fi

# 2b. the TLS scanner (sslyze) of tests/security in its own venv: it pins an older cryptography
if [ -x .venv-scan/bin/sslyze ]; then
  echo "scan: .venv-scan present"
else
  python3 -m venv .venv-scan
  .venv-scan/bin/pip install -q "$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["scan"][0])')"
  echo "scan: installed sslyze into .venv-scan"
fi

# 3. Debian 13 tools ----------------------------------------------------------------------
trixie=tools/trixie
if [ -x $trixie/usr/bin/pebble ] && [ -x $trixie/usr/bin/pebble-challtestsrv ] \
   && [ -x $trixie/usr/libexec/docker/cli-plugins/docker-compose ]; then
  echo "tools: $trixie present"
else
  scripts/fetch-trixie.sh "$trixie" pebble docker-compose >/dev/null
  echo "tools: fetched pebble, docker-compose into $trixie"
fi

# 3b. promtool (checks deploy/prometheus/ in the tests): Debian 12's prometheus package,
#     downloaded and unpacked into tools/prometheus; nothing is installed or started
if [ -x tools/prometheus/usr/bin/promtool ]; then
  echo "tools: promtool present"
else
  ptmp=$(mktemp -d)
  popts=(-o APT::Sandbox::User=root -qq)
  (cd "$ptmp" && { apt-get "${popts[@]}" download prometheus >/dev/null 2>&1 \
     || { apt-get update -qq && apt-get "${popts[@]}" download prometheus >/dev/null; }; })
  mkdir -p tools/prometheus
  dpkg -x "$ptmp"/prometheus_*.deb tools/prometheus
  rm -rf "$ptmp"
  echo "tools: unpacked promtool into tools/prometheus"
fi

# 4. docker engine ------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  echo "docker: engine running"
else
  mkdir -p tools
  setsid nohup dockerd >>"$root/tools/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if docker info >/dev/null 2>&1; then
    echo "docker: started dockerd (log tools/dockerd.log)"
  else
    echo "docker: dockerd did not come up within 60 s; tail of tools/dockerd.log:" >&2
    tail -20 tools/dockerd.log >&2
    exit 1
  fi
fi

# 5. nginx test image -------------------------------------------------------------------
scripts/build-nginx-image.sh

# 6. bind9's named, unpacked (not installed: no service to start or stop) -----------------
bind=tools/bind9
if [ -x $bind/usr/sbin/named ] && $bind/usr/sbin/named -V >/dev/null 2>&1; then
  echo "bind9: $bind present"
else
  tmp=$(mktemp -d)
  get() { (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root bind9 >/dev/null); }
  get || { apt-get update -qq && get; }
  # named links the versioned libraries of bind9-libs: install exactly the matching ones
  apt-get install -y -qq "bind9-libs=$(dpkg-deb -f "$tmp"/bind9_*.deb Version)" >/dev/null
  mkdir -p $bind
  dpkg -x "$tmp"/bind9_*.deb $bind
  rm -rf "$tmp"
  $bind/usr/sbin/named -V >/dev/null
  echo "bind9: unpacked $($bind/usr/sbin/named -v) into $bind"
fi
