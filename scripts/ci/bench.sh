#!/usr/bin/env bash
# `bench --compare BASE HEAD` for every slot exported on both sides, on each device of DEVICES (local, sim:CORE,
# ssh:USER@HOST, ...), the two artifacts alternating round by round: MODELS_DIR/{base,head}/<slot>/*.tflite ->
# RESULTS/<label>/<slot>.json, label = LABEL for local, else the device spec (sim:cortex-a72 -> sim-cortex-a72).
# Settings: RUNS (timed runs per round), ROUNDS, WARMUP, THREADS (1), CORES (big), COOLDOWN (0 s between
# rounds), MAX_TEMP (80); MAX_SLOWDOWN / TOLERANCE only for the verdict printed in the log (the gate job's
# count). A slot on one side only is skipped with a warning. Output: compared (count).
set -euo pipefail
shopt -s nullglob
. "$(dirname "$0")/common.sh"

MODELS_DIR=$(cd "${MODELS_DIR:?MODELS_DIR: the export artifacts, base/ and head/}" && pwd)
mkdir -p "${RESULTS:?RESULTS: where the compare results go}"
printf 'base %s\nhead %s\n' "$(cat "$MODELS_DIR/base/COMMIT")" "$(cat "$MODELS_DIR/head/COMMIT")" > "$RESULTS/sides.txt"

compared=0 failed=()
for device in ${DEVICES:-local}; do
    if [ "$device" = local ]; then label=${LABEL:-local}; else label=${device//[:@\/]/-}; fi
    mkdir -p "$RESULTS/$label"
    for head_dir in "$MODELS_DIR"/head/*/; do
        slot=$(basename "$head_dir")
        head=("$head_dir"*.tflite)
        base=("$MODELS_DIR/base/$slot/"*.tflite)
        if [ "${#base[@]}" != 1 ] || [ "${#head[@]}" != 1 ]; then
            ci_warning "$slot: not one artifact on each side (base ${#base[@]}, head ${#head[@]}): not compared"
            continue
        fi
        echo "== $label: $slot"
        if tool bench --compare "${base[0]}" "${head[0]}" --device "$device" --threads "${THREADS:-1}" \
                --warmup "${WARMUP:-10}" --runs "${RUNS:-5}" --rounds "${ROUNDS:-10}" --cores "${CORES:-big}" \
                --cooldown "${COOLDOWN:-0}" --max-temp "${MAX_TEMP:-80}" --max-slowdown "${MAX_SLOWDOWN:-5%}" \
                --tolerance "${TOLERANCE:-0.1%}" --json "$RESULTS/$label/$slot.json"; then
            compared=$((compared + 1))
        else
            ci_error "$label: bench --compare failed for $slot"
            failed+=("$label/$slot")
        fi
    done
done
ci_output compared "$compared"
[ "${#failed[@]}" = 0 ] || exit 1
[ "$compared" -gt 0 ] || { ci_error "nothing to compare in $MODELS_DIR"; exit 1; }
