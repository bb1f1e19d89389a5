#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs svilab in editable mode with its dev and sweep extras.
# A second run is instant: the install is skipped while setup.cfg, pyproject.toml and
# scripts/constraints.txt are unchanged (their hash is kept in .venv/.svilab-stamp).
# Source it (". scripts/bootstrap.sh") or run it; it leaves the venv's python in $SVILAB_PY.
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="${SVILAB_VENV:-$_root/.venv}"
_python="${PYTHON:-}"
if [ -z "$_python" ]; then
  for c in python3.11 python3.12 python3.10 python3; do
    if command -v "$c" >/dev/null 2>&1; then _python="$c"; break; fi
  done
fi
if [ ! -x "$_venv/bin/python" ]; then
  echo "[svilab] creating virtual environment in $_venv" >&2
  "$_python" -m venv "$_venv"
fi
_stamp="$(cat "$_root/setup.cfg" "$_root/pyproject.toml" "$_root/scripts/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_venv/.svilab-stamp" 2>/dev/null || true)" != "$_stamp" ]; then
  echo "[svilab] installing svilab and its dependencies (first run takes a few minutes)" >&2
  "$_venv/bin/python" -m pip install -q --upgrade pip >&2
  "$_venv/bin/python" -m pip install -q -c "$_root/scripts/constraints.txt" -e "$_root[dev,sweep]" >&2
  echo "$_stamp" > "$_venv/.svilab-stamp"
fi
export SVILAB_PY="$_venv/bin/python"
export PATH="$_venv/bin:$PATH"
