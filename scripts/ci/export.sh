#!/usr/bin/env bash
# Export one side's models into OUT/SIDE/<slot>/ (one TFLite artifact + its manifest per slot) and its commit
# into OUT/SIDE/COMMIT. MODELS: variant names (tiny small base: seeded random weights, fine for latency) and/or
# checkpoint paths relative to SRC; slot = variant or checkpoint file stem, "-", precision (PRECISIONS).
# Settings: SIDE, SRC (the side's source tree), OUT, MODELS, PRECISIONS, INPUT_SIZE, CALIB (synthetic),
# CALIB_COUNT (32). A checkpoint missing on this side is skipped with a warning (a new or removed model).
set -euo pipefail
. "$(dirname "$0")/common.sh"

SIDE=${SIDE:?SIDE must be base or head}
SRC=$(cd "${SRC:?SRC: the source tree of the side}" && pwd)
mkdir -p "${OUT:?OUT: where the models go}"
OUT=$(cd "$OUT" && pwd)
dest=$OUT/$SIDE
rm -rf "$dest"
mkdir -p "$dest"
git -C "$SRC" rev-parse HEAD > "$dest/COMMIT" 2>/dev/null || echo unknown > "$dest/COMMIT"

exported=0
for model in ${MODELS:?MODELS: variant names and/or checkpoint paths}; do
    case "$model" in
        tiny|small|base)
            source=(--variant "$model"); name=$model ;;
        *)
            if [ ! -f "$SRC/$model" ]; then
                ci_warning "$SIDE: $model does not exist at $(cat "$dest/COMMIT"): not exported"
                continue
            fi
            source=(--checkpoint "$SRC/$model"); name=$(basename "${model%.*}") ;;
    esac
    for precision in ${PRECISIONS:-fp32 int8}; do
        slot=$name-$precision
        calib=()
        [ "$precision" != int8 ] || calib=(--calib "${CALIB:-synthetic}" --calib-count "${CALIB_COUNT:-32}")
        echo "== $SIDE: $slot"
        # from SRC, so that relative paths (a --calib folder) are the side's
        (cd "$SRC" && tool export "${source[@]}" --to tflite --precision "$precision" \
            --input-size "${INPUT_SIZE:-512}" "${calib[@]}" --out "$dest/$slot" --json > /dev/null)
        ls "$dest/$slot"
        exported=$((exported + 1))
    done
done
[ "$exported" -gt 0 ] || { ci_error "$SIDE: nothing exported (MODELS=$MODELS)"; exit 1; }
ci_output exported "$exported"
