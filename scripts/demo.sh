#!/usr/bin/env bash
# The main job on a fresh machine: install fnserve, bring up the embedded stack (Redis, web
# service, forwarder, a local endpoint on Parsl), register functions, run them, show results.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[service,site,embedded]"
fnserve up
fnserve demo
echo
echo "The stack keeps running: try 'fnserve functions', 'fnserve endpoints', or the SDK."
echo "Stop it with: fnserve down"
