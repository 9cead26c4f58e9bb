#!/usr/bin/env bash
# `make demo`: tlsbridge end to end on this machine, in well under a minute once set up.
# A local Pebble CA, the Docker engine, nginx from `tlsbridge compose`, a certificate issued
# through the webroot that nginx serves, and curl checking HTTPS against Pebble's root.
# Idempotent (clears /tmp/tlsbridge-demo and the compose project `tlsbridge-demo` first).
#
# Usage: scripts/demo.sh [--keep] [--dir DIR]    (--keep: leave nginx running afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
