#!/usr/bin/env bash
# One side of the comparison, checked out: head = the commit checked out in the workspace; base = the merge base
# of BASE_REF (a commit or branch) and head, or head's parent when BASE_REF is empty (needs the history:
# actions/checkout with fetch-depth: 0). Outputs: sha, dir (the side's source tree).
set -euo pipefail
. "$(dirname "$0")/common.sh"

SIDE=${SIDE:?SIDE must be base or head}
cd "${GITHUB_WORKSPACE:-.}"
head=$(git rev-parse HEAD)
case "$SIDE" in
    head)
        sha=$head
        dir=$PWD ;;
    base)
        if [ -n "${BASE_REF:-}" ]; then
            ref=$(git rev-parse --verify --quiet "$BASE_REF^{commit}" || git rev-parse --verify --quiet "origin/$BASE_REF^{commit}") \
                || { ci_error "base $BASE_REF is not a commit or branch of this checkout"; exit 1; }
            sha=$(git merge-base "$ref" "$head") \
                || { ci_error "$BASE_REF and $head have no merge base here: check out with fetch-depth: 0"; exit 1; }
        else
            sha=$(git rev-parse --verify --quiet "$head^") \
                || { ci_error "$head has no parent here: give a base, and check out with fetch-depth: 0"; exit 1; }
        fi
        [ "$sha" != "$head" ] || ci_warning "the base is the head itself ($sha): the comparison can only say same"
        dir=${RUNNER_TEMP:-${TMPDIR:-/tmp}}/topformer-base-side
        rm -rf "$dir"
        git worktree prune
        git worktree add --detach --quiet "$dir" "$sha" ;;
    *)
        ci_error "SIDE must be base or head, not $SIDE"; exit 2 ;;
esac
echo "$SIDE: $sha $(git log -1 --format=%s "$sha")"
ci_output sha "$sha"
ci_output dir "$dir"
