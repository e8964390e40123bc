#!/usr/bin/env bash
# install.sh export|device|gate: what a job needs, into the current Python - or into the venv VENV (created if
# missing; default for device: $TOPFORMER_DEVICE_VENV), whose bin/ then goes on GITHUB_PATH.
#   export  the tool's dependencies from TOOL_SRC's pyproject.toml (torch from the CPU wheel index)
#   device  requirements-device.txt: numpy, ai-edge-litert, click, rich, scipy - no torch (a Pi; a simulated core's host)
#   gate    the device set and matplotlib (the chart)
# pip contacts no index when everything is installed already. Outputs: python, torch (absent|present).
set -euo pipefail
. "$(dirname "$0")/common.sh"

kind=${1:?usage: install.sh export|device|gate}
[ "$kind" != device ] || VENV=${VENV:-${TOPFORMER_DEVICE_VENV:-}}
if [ -n "${VENV:-}" ]; then
    VENV=${VENV/#\~/$HOME}
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    PYTHON=$VENV/bin/python
    ci_path "$VENV/bin"
fi

pyproject_requirements() {   # pyproject_requirements [NAME...]: TOOL_SRC's dependencies (those named, or all)
    "$PYTHON" - "$TOOL_SRC/pyproject.toml" "$@" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
wanted = set(sys.argv[2:])
print("\n".join(d for d in deps if not wanted or re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0] in wanted))
PY
}

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
pip_args=()
case "$kind" in
    export)
        pyproject_requirements > "$requirements"
        pip_args=(--extra-index-url https://download.pytorch.org/whl/cpu) ;;
    device)
        cp "$TOOL_ROOT/requirements-device.txt" "$requirements" ;;
    gate)
        { cat "$TOOL_ROOT/requirements-device.txt"; pyproject_requirements matplotlib; } > "$requirements" ;;
    *)
        ci_error "install.sh: unknown kind $kind (export, device or gate)"; exit 2 ;;
esac
PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip install -q "${pip_args[@]}" -r "$requirements"

torch=$("$PYTHON" -c '
import importlib.util as u
try:
    spec = u.find_spec("torch")
except ImportError:          # a finder that refuses torch
    spec = None
print("present" if spec else "absent")')
"$PYTHON" - <<'PY'
import importlib.metadata as m, platform, sys
names = ("numpy", "ai-edge-litert", "click", "rich", "scipy", "matplotlib", "torch")
found = []
for name in names:
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print(f"{sys.executable} (Python {platform.python_version()}, {platform.machine()}): {', '.join(found)}")
PY
if [ "$kind" = device ] && [ "$torch" = present ]; then
    ci_warning "$PYTHON has torch: the device side needs only requirements-device.txt (a fresh VENV keeps it light)"
fi
ci_output python "$PYTHON"
ci_output torch "$torch"
