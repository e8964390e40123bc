# Sourced by the scripts in scripts/ci: GitHub Actions' step files (outputs, env, path, summary), which are
# /dev/null outside Actions, and the tool's command line run from a source tree (no install needed).
CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The topformer-deploy source tree these scripts belong to (the composite action's repository).
TOOL_ROOT=$(cd "$CI_DIR/../.." && pwd)
# The topformer_deploy package that runs: TOOL_ROOT's, or a side's checkout when the code under test is the tool.
TOOL_SRC=${TOOL_SRC:-$TOOL_ROOT}
PYTHON=${PYTHON:-python3}

ci_output() { echo "$1=$2" >> "${GITHUB_OUTPUT:-/dev/null}"; }
ci_path() { echo "$1" >> "${GITHUB_PATH:-/dev/null}"; }
ci_summary() { printf '%s\n' "$@" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"; }
ci_error() { echo "::error::$*"; }
ci_warning() { echo "::warning::$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo --preserve-env "$@"; fi; }

# tool_python ARGS...: the current Python with TOOL_SRC's topformer_deploy importable
tool_python() { PYTHONPATH="$TOOL_SRC${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"; }
# tool ARGS...: TOOL_SRC's command line (topformer-deploy ARGS...)
tool() { tool_python -m topformer_deploy "$@"; }
