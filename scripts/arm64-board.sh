#!/usr/bin/env bash
# The emulated Arm board (Debian bookworm arm64 under qemu-user, sshd on 127.0.0.1), see docs/arm64-board.md.
#   scripts/arm64-board.sh build [--force] | start | stop | status | ssh-config
# Runs as root with the project's Python (set PYTHON=... or activate the venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m topformer_deploy.testing.arm64_board "$@"
