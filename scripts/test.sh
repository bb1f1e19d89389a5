#!/usr/bin/env bash
# One command for the whole setup and the test suite: bash scripts/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
# The real MNIST files, where the checkout has ../shared beside it (CI does); tests that need
# them skip elsewhere unless SVILAB_DATA points at a folder that has them.
if [ -z "${SVILAB_DATA:-}" ] && [ -d ../shared/data/MNIST/raw ]; then
  export SVILAB_DATA="$(cd ../shared/data && pwd)"
fi
export MPLBACKEND=Agg
"$SVILAB_PY" -m ruff check svilab tests benchmarks examples
exec "$SVILAB_PY" -m pytest "$@"
