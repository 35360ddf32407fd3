#!/usr/bin/env bash
# README command 1 (`./launch.sh demo` runs this): from a fresh clone to a small pretrained model generating text.
#   1. installs what is missing (OpenMPI, OpenBLAS, oneDNN, pkg-config) — scripts/install-deps.sh
#   2. builds the release binary
#   3. trains a byte-level BPE tokenizer on data/demo/pretrain.jsonl
#   4. pretrains a small model with `mpirun -np 2` for a few minutes
#   5. prints a continuation of a poem's first line
# Environment knobs: DEMO_NP (2), DEMO_STEPS (400), DEMO_OUT (runs/demo), DEMO_VOCAB (6400).
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${DEMO_NP:-2}
STEPS=${DEMO_STEPS:-400}
OUT=${DEMO_OUT:-runs/demo}
VOCAB=${DEMO_VOCAB:-6400}
DATA=data/demo/pretrain.jsonl

bash scripts/install-deps.sh
. scripts/env.sh
. scripts/swift_build.sh
echo "== building (release)"
swift_build -c release --product trainer
BIN=.build/release/trainer
mkdir -p "$OUT"

echo "== training a tokenizer on $DATA (vocab $VOCAB)"
"$BIN" tokenizer train --data "$DATA" --vocab-size "$VOCAB" --out "$OUT/tokenizer"

echo "== pretraining with mpirun -np $NP ($STEPS steps)"
MPI_FLAGS=(-np "$NP" --oversubscribe --bind-to none)
rm -rf "$OUT/pretrain"
mpirun "${MPI_FLAGS[@]}" -x OPENBLAS_NUM_THREADS=1 -x OPENBLAS_CORETYPE \
  "$BIN" pretrain --data-path "$DATA" --tokenizer "$OUT/tokenizer" --out-dir "$OUT/pretrain" \
  --hidden-size 128 --num-hidden-layers 4 --max-seq-len 128 --batch-size 8 --accumulation-steps 1 \
  --learning-rate 1e-3 --epochs 3 --max-steps "$STEPS" --log-interval 20 --save-interval 200 --threads 1

echo "== generating"
PROMPT='《静夜思》
作者：李白
床前明月光，'
# MiniMind's eval_model.py prompt for a pretrained model: bos_token + text (pretraining samples start with it; the
# tokenizer itself adds no BOS to raw text, as in transformers).
TEXT=$("$BIN" generate --model "$OUT/pretrain/final" --prompt "<|im_start|>$PROMPT" --max-new-tokens 48 --temperature 0.7 \
       2>"$OUT/generate.log") || { cat "$OUT/generate.log" >&2; exit 1; }
echo "----"
printf '%s%s\n' "$PROMPT" "$TEXT"
echo "----"
echo "model: $OUT/pretrain/final   metrics: $OUT/pretrain/metrics.jsonl"
