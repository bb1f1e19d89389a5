#!/usr/bin/env bash
# One command for the whole setup and the main job: bash scripts/demo.sh [extra svilab demo options]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
exec "$SVILAB_PY" -m svilab demo "$@"
