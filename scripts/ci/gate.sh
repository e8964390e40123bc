#!/usr/bin/env bash
# Verdicts on the compare results RESULTS/<label>/*.json, one gate report per device label, into OUT:
#   <label>.json (the report), <label>.md (also appended to the job summary), <label>.png (box plots),
#   <label>-benchmark.json (github-action-benchmark customSmallerIsBetter: the head's medians),
#   <label>-head-baseline.json (the head's results as a baseline file: commit it to track a trend).
# TREND_BASELINE (optional, a committed baseline file): the head is also compared with it, for information
# only - a baseline recorded on another day drifts with the OS, the runtime and the room; the gate's reference
# is the base commit measured in the same run. Settings: MAX_SLOWDOWN (5%), ALPHA (0.01), TOLERANCE (0.1%:
# instruction counts), FAIL_ON_INCONCLUSIVE (true). Outputs: status (pass|regression|inconclusive), and
# <label> = its status. Exits 1 on a regression (or an inconclusive verdict) after writing everything.
set -uo pipefail
shopt -s nullglob
. "$(dirname "$0")/common.sh"

RESULTS=$(cd "${RESULTS:?RESULTS: the compare results, one folder per device}" && pwd) || exit 2
mkdir -p "${OUT:?OUT: where the reports go}"
status=pass
if [ -f "$RESULTS/sides.txt" ]; then
    read -r _ base_sha < <(grep '^base ' "$RESULTS/sides.txt")
    read -r _ head_sha < <(grep '^head ' "$RESULTS/sides.txt")
    ci_summary "## Latency CI: head \`${head_sha:0:12}\` against its merge base \`${base_sha:0:12}\`" ""
fi
labels=0
for dir in "$RESULTS"/*/; do
    label=$(basename "$dir")
    results=("$dir"*.json)
    [ "${#results[@]}" -gt 0 ] || continue
    labels=$((labels + 1))
    ci_summary "#### $label"
    compare=()
    for r in "${results[@]}"; do compare+=(--compare "$r"); done
    tool gate "${compare[@]}" --max-slowdown "${MAX_SLOWDOWN:-5%}" --alpha "${ALPHA:-0.01}" \
        --tolerance "${TOLERANCE:-0.1%}" --summary-md "$OUT/$label.md" --chart "$OUT/$label.png" \
        --github-benchmark "$OUT/$label-benchmark.json" --json > "$OUT/$label.json"
    code=$?
    case "$code" in
        0) verdict=pass ;;
        1) verdict=regression; ci_error "$label: latency regression (see the job summary)" ;;
        *) verdict=inconclusive
           [ -s "$OUT/$label.json" ] || { ci_error "$label: the gate could not judge these results"; exit 2; }
           ci_warning "$label: inconclusive - measure again (more rounds, a quieter or cooler device)" ;;
    esac
    echo "$label: $verdict"
    ci_output "$label" "$verdict"
    if [ "$verdict" = regression ] || { [ "$verdict" = inconclusive ] && [ "$status" = pass ]; }; then
        status=$verdict
    fi
    tool_python "$CI_DIR/heads.py" "$OUT/$label-head-baseline.json" "${results[@]}" || status=inconclusive
    if [ -n "${TREND_BASELINE:-}" ] && [ -f "$TREND_BASELINE" ]; then
        ci_summary "<details><summary>$label: the head against $TREND_BASELINE (trend, not gating)</summary>" ""
        GITHUB_STEP_SUMMARY=/dev/null tool gate --baseline "$TREND_BASELINE" \
            --candidate "$OUT/$label-head-baseline.json" --max-slowdown "${MAX_SLOWDOWN:-5%}" \
            --summary-md "$OUT/$label-trend.md" > /dev/null
        { cat "$OUT/$label-trend.md" 2>/dev/null || echo "not comparable (see the log)"; } >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
        ci_summary "</details>" ""
    fi
done
[ "$labels" -gt 0 ] || { ci_error "no compare results in $RESULTS"; exit 2; }
ci_output status "$status"
echo "gate: $status"
case "$status" in
    pass) exit 0 ;;
    regression) exit 1 ;;
    *) [ "${FAIL_ON_INCONCLUSIVE:-true}" != true ] || exit 1 ;;
esac
