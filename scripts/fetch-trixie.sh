#!/usr/bin/env bash
# Fetch Debian 13 (trixie) packages into tools/ without touching the system:
# a temporary sources list derived from this machine's own (suite bookworm -> trixie),
# `apt-get download`, then `dpkg -x`. Usage: scripts/fetch-trixie.sh DEST PKG...
set -euo pipefail
mkdir -p "$1"
dest=$(cd "$1" && pwd); shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$dest"
src="$tmp/trixie.sources"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  # Only Debian's own archive entries: the ones whose suites name bookworm.
  awk 'BEGIN{RS="";ORS="\n\n"} /Suites:[^\n]*bookworm/' "$f" | sed 's/bookworm/trixie/g' >>"$src"
done
if [ -f /etc/apt/sources.list ]; then
  grep -E '^deb .*bookworm' /etc/apt/sources.list | sed 's/bookworm/trixie/g' >"$tmp/trixie.list" || true
fi
opts=(-o "Dir::Etc::sourcelist=$tmp/trixie.list" -o "Dir::Etc::sourceparts=$tmp/parts"
      -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "APT::Get::List-Cleanup=0"
      -o "APT::Sandbox::User=root" -o "Acquire::Retries=3" -o "Acquire::http::Timeout=30")
mkdir -p "$tmp/parts"; touch "$tmp/trixie.list"
[ -s "$src" ] && cp "$src" "$tmp/parts/trixie.sources"
apt-get "${opts[@]}" update -qq
cd "$tmp"
apt-get "${opts[@]}" download "$@"
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dest"; done
