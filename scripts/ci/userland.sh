#!/usr/bin/env bash
# The host of the simulated cores (a Debian bookworm machine or container, root or sudo):
#   userland.sh host   apt-get installs what is missing of qemu-user (the plugin-capable qemu-aarch64), gcc,
#                      qemu-user-static, binfmt-support, debootstrap (the userland build) and python3-pip
#   userland.sh key    outputs dir (the aarch64 userland: $TOPFORMER_ARM64_BOARD_DIR, default
#                      ~/.cache/topformer-deploy/arm64-bookworm) and key (for actions/cache: the builder's source
#                      and the runtime versions it pins from this Python)
#   userland.sh build  builds the userland unless it is complete (a no-op after a cache hit; network, root)
set -euo pipefail
. "$(dirname "$0")/common.sh"

case "${1:-}" in
    host)
        missing=()
        for package in qemu-user qemu-user-static binfmt-support debootstrap gcc libc6-dev; do
            dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
        done
        "$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)    # a bare container
        if [ "${#missing[@]}" -gt 0 ]; then
            echo "installing ${missing[*]}"
            as_root apt-get update -qq
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" ca-certificates > /dev/null
        fi
        qemu-aarch64 --version | head -1 ;;
    key)
        tool_python - <<'PY' >> "${GITHUB_OUTPUT:-/dev/stdout}"
import hashlib, json, platform
from topformer_deploy.bench.sim import userland
pins = userland.host_runtime_versions(userland.RUNTIME_PACKAGES + userland.TOOL_PACKAGES)
digest = hashlib.sha256(open(userland.__file__, "rb").read() + json.dumps(pins, sort_keys=True).encode())
print(f"dir={userland.CACHE_DIR}")
print(f"key=arm64-userland-{userland.SUITE}-{platform.machine()}-{digest.hexdigest()[:20]}")
PY
        ;;
    build)
        as_root env PATH="$PATH" PYTHONPATH="$TOOL_SRC${PYTHONPATH:+:$PYTHONPATH}" \
            ${TOPFORMER_ARM64_BOARD_DIR:+TOPFORMER_ARM64_BOARD_DIR="$TOPFORMER_ARM64_BOARD_DIR"} \
            "$PYTHON" -m topformer_deploy.testing.arm64_board build > /dev/null
        echo "aarch64 userland ready" ;;
    *)
        echo "usage: userland.sh host|key|build" >&2; exit 2 ;;
esac
