#!/usr/bin/env bash
# The post-training acceptance run (issue 5): SFT → author accuracy; DPO on 90% of dpo.jsonl → held-out preference
# accuracy vs the SFT model; a reward model on the same split → held-out pair accuracy; LoRA identity → "你是谁？" and author accuracy with the adapter; reasoning SFT on 90% of
# reason.jsonl → think/answer format rate on the held-out 10%; distillation of a smaller student from the SFT model vs
# the same student trained by plain SFT for the same steps (held-out SFT loss). Every training stage runs with
# ./launch.sh -np $NP. Figures are appended to $OUT/results.jsonl.
#
#   BASE=/path/to/pretrained/final scripts/pipeline.sh
# Knobs (environment): BASE (pretrained model directory; default: pretrain one with ./launch.sh first), OUT (runs/post),
# CORPUS (Tests/Fixtures/corpus), TOKENIZER (Tests/Fixtures/tokenizers/minimind),
# NP (2), CONFIG (release | debug), HIDDEN (256), PRETRAIN_EPOCHS (3), SFT2_EPOCHS (6), SFT2_LR (5e-4), SFT_EPOCHS, SFT_LR, SFT_SEQ, DPO_LR, DPO_EPOCHS, LORA_EPOCHS (25), LORA_LR (1.5e-3), LORA_RANK (16), REASON_EPOCHS,
# REASON_SEQ (512), REASON_MAX_NEW (2048), DISTILL_STEPS, DISTILL_T (1.0), RM_LR (1e-4), RM_EPOCHS (2), STAGES (space-separated subset of: pretrain sft sft-eval dpo reward lora reason distill; sft-eval = only the SFT evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/post}
NP=${NP:-2}
CONFIG=${CONFIG:-release}
C=${CORPUS:-Tests/Fixtures/corpus}                      # the jsonl corpus (Tests/Fixtures/README.md)
TOK=${TOKENIZER:-Tests/Fixtures/tokenizers/minimind}    # MiniMind's tokenizer
STAGES=${STAGES:-"pretrain sft dpo reward lora reason distill"}
mkdir -p "$OUT/data"
RES=$OUT/results.jsonl

. scripts/env.sh
swift build -c "$CONFIG" --product trainer >&2
BIN="$(swift build -c "$CONFIG" --show-bin-path)/trainer"
LF=(--no-build); [ "$CONFIG" = debug ] && LF+=(--debug)
L() { ./launch.sh "${LF[@]}" -np "$NP" "$@"; }
E() { "$BIN" "$@" 2>/dev/null | tee -a "$RES"; }
has() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# 90 / 10 splits (the last 10% held out).
split() { local n; n=$(wc -l < "$1"); local k=$(( n * 9 / 10 )); head -n "$k" "$1" > "$2"; tail -n +"$((k + 1))" "$1" > "$3"; }
split "$C/dpo.jsonl" "$OUT/data/dpo_train.jsonl" "$OUT/data/dpo_test.jsonl"
split "$C/reason.jsonl" "$OUT/data/reason_train.jsonl" "$OUT/data/reason_test.jsonl"
split "$C/sft.jsonl" "$OUT/data/sft_train.jsonl" "$OUT/data/sft_test.jsonl"

# 0. Pretrained base (hidden 256, 4 layers, 4.46 M parameters; 3 epochs = 1878 steps) unless BASE is given.
if [ -z "${BASE:-}" ]; then
  BASE=$OUT/pretrain/final
  if has pretrain && [ ! -f "$BASE/model.safetensors" ]; then
    L pretrain --data-path "$C/pretrain.jsonl" --tokenizer "$TOK" --out-dir "$OUT/pretrain" \
      --hidden-size "${HIDDEN:-256}" --num-hidden-layers 4 --max-seq-len 128 --batch-size 8 --accumulation-steps 1 \
      --learning-rate 1e-3 --epochs "${PRETRAIN_EPOCHS:-3}" --log-interval 100 --save-interval 600
  fi
fi
SFT=$OUT/sft/final

# 1. SFT on sft.jsonl in two runs (10 epochs at lr 1e-3, then 6 more at 5e-4 from the first run's model: the second
#    run makes the memorised answers robust enough that a LoRA adapter does not wipe them out); author accuracy on the
#    408 "《标题》的作者是谁？" prompts, for both runs.
if has sft; then
  L sft --init "$BASE" --data-path "$C/sft.jsonl" --out-dir "$OUT/sft1" --epochs "${SFT_EPOCHS:-10}" \
    --batch-size 16 --max-seq-len "${SFT_SEQ:-96}" --learning-rate "${SFT_LR:-1e-3}" --log-interval 20 --save-interval 200
  E eval --task exact-match --model "$OUT/sft1/final" --data "$C/sft.jsonl" --filter "的作者是谁" --match author --max-new-tokens 40
  L sft --init "$OUT/sft1/final" --data-path "$C/sft.jsonl" --out-dir "$OUT/sft" --epochs "${SFT2_EPOCHS:-6}" \
    --batch-size 16 --max-seq-len "${SFT_SEQ:-96}" --learning-rate "${SFT2_LR:-5e-4}" --log-interval 50 --save-interval 1000
fi
if has sft || has sft-eval; then
  E eval --task exact-match --model "$SFT" --data "$C/sft.jsonl" --filter "的作者是谁" --match author --max-new-tokens 40 \
    --answers "$OUT/sft_author_answers.jsonl"
fi

# 2. DPO on 90% of dpo.jsonl; preference accuracy (chosen preferred by mean log-prob) on the held-out 10%.
if has dpo; then
  L dpo --init "$SFT" --data-path "$OUT/data/dpo_train.jsonl" --out-dir "$OUT/dpo" --epochs "${DPO_EPOCHS:-2}" \
    --batch-size 4 --max-seq-len 128 --learning-rate "${DPO_LR:-1e-5}" --log-interval 20 --save-interval 200
  E eval --task preference --model "$SFT" --data "$OUT/data/dpo_test.jsonl" --max-seq-len 128
  E eval --task preference --model "$OUT/dpo/final" --data "$OUT/data/dpo_test.jsonl" --max-seq-len 128
  E eval --task preference --model "$OUT/dpo/final" --reference "$SFT" --data "$OUT/data/dpo_test.jsonl" --max-seq-len 128
fi

# 2b. Reward model (Bradley–Terry, backbone from the SFT model) on the same 90% of dpo.jsonl; held-out pair accuracy
#     (r_chosen > r_rejected) with its 95% Wilson interval.
if has reward; then
  L reward --init "$SFT" --data-path "$OUT/data/dpo_train.jsonl" --out-dir "$OUT/reward" --epochs "${RM_EPOCHS:-2}" \
    --batch-size 4 --max-seq-len 128 --learning-rate "${RM_LR:-1e-4}" --log-interval 20 --save-interval 1000
  E eval --task preference --reward-model "$OUT/reward/final" --data "$OUT/data/dpo_test.jsonl" --max-seq-len 128
fi

# 3. LoRA identity on top of the SFT model; "你是谁？" and author accuracy with the adapter merged in.
if has lora; then
  L lora --init "$SFT" --data-path "$C/lora_identity.jsonl" --out-dir "$OUT/lora" --epochs "${LORA_EPOCHS:-25}" \
    --batch-size 8 --max-seq-len 64 --learning-rate "${LORA_LR:-1.5e-3}" --lora-rank "${LORA_RANK:-16}" --log-interval 10 --save-interval 1000
  printf '{"conversations": [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "SwiftMind"}]}\n' > "$OUT/data/who.jsonl"
  E eval --task exact-match --match contains --model "$SFT" --lora "$OUT/lora/lora.safetensors" --data "$OUT/data/who.jsonl" --max-new-tokens 40
  E eval --task exact-match --model "$SFT" --lora "$OUT/lora/lora.safetensors" --data "$C/sft.jsonl" --filter "的作者是谁" --match author \
    --max-new-tokens 40 --answers "$OUT/lora_author_answers.jsonl"
  "$BIN" lora merge --model "$SFT" --lora "$OUT/lora/lora.safetensors" --out "$OUT/lora_merged" 2>/dev/null
fi

# 4. Reasoning SFT on 90% of reason.jsonl; think/answer format rate on the held-out prompts.
if has reason; then
  L reason --init "$SFT" --data-path "$OUT/data/reason_train.jsonl" --out-dir "$OUT/reason" --epochs "${REASON_EPOCHS:-6}" \
    --batch-size 8 --max-seq-len "${REASON_SEQ:-512}" --learning-rate "${REASON_LR:-1e-3}" --log-interval 20 --save-interval 200
  E eval --task format --model "$OUT/reason/final" --data "$OUT/data/reason_test.jsonl" --max-new-tokens "${REASON_MAX_NEW:-2048}" \
    --answers "$OUT/reason_answers.jsonl"
fi

# 5. Distillation of a smaller student (hidden 64, 2 layers, random init) from the SFT model vs plain SFT, same steps.
if has distill; then
  S=(--tokenizer "$SFT" --hidden-size 64 --num-hidden-layers 2 --data-path "$OUT/data/sft_train.jsonl" --batch-size 16
     --max-seq-len 96 --learning-rate 2e-3 --max-steps "${DISTILL_STEPS:-200}" --epochs 20 --seed 7 --log-interval 20 --save-interval 1000)
  L distill --teacher "$SFT" --out-dir "$OUT/distill" --temperature "${DISTILL_T:-1.0}" "${S[@]}"
  L sft --out-dir "$OUT/student_sft" "${S[@]}"
  E eval --task sft-loss --model "$OUT/distill/final" --data "$OUT/data/sft_test.jsonl" --max-seq-len 96
  E eval --task sft-loss --model "$OUT/student_sft/final" --data "$OUT/data/sft_test.jsonl" --max-seq-len 96
  E eval --task sft-loss --model "$SFT" --data "$OUT/data/sft_test.jsonl" --max-seq-len 96
fi
echo "results: $RES"
