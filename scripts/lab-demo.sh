#!/usr/bin/env bash
# The main job on one fresh machine (as root): install what is missing, then clone a golden
# disk onto 3 lab nodes over a 1 Gbit/s virtual switch, verify every clone, tear it all down.
# Extra arguments go to `ka lab clone` (e.g. --nodes 5 --rate 100mbit --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "lab-demo: run as root (the lab makes network namespaces, loop devices and mounts)" >&2
  exit 1
fi
bash scripts/setup.sh
exec .venv/bin/ka lab clone --nodes 3 --size 1GiB --data 128MiB "$@"
