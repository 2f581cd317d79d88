#!/usr/bin/env bash
# Creates ./.venv (once) and installs nnunet_dfg with its pinned dependencies (torch 2.14.1, nnunetv2 2.8.1, ...).
# Also installs Debian's mricron-data (a real labelled MRI the SAM tests need) with apt-get, as root or via sudo.
# Safe to re-run: an existing venv is reused and pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
if [ ! -f /usr/share/mricron/templates/ch2.nii.gz ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mricron-data) \
    >/dev/null 2>&1 || echo "warning: could not install mricron-data (apt-get as root); the real-image SAM tests" \
    "will fail without it (DFG_ALLOW_MISSING_TEST_DATA=1 skips them)" >&2
fi
echo "nnunet_dfg installed in $(pwd)/.venv"
