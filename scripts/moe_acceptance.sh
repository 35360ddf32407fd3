#!/usr/bin/env bash
# MoE acceptance (issue 7): a dense and a MoE model of equal ACTIVE parameters pretrained for the same steps under
# ./launch.sh -np $NP on the corpus in Tests/Fixtures/corpus (loss curves side by side, held-out loss), then every post-training stage
# with --use-moe from the MoE base, generation from the results, and the bench figures.
#   scripts/moe_acceptance.sh            knobs: OUT (runs/moe), NP (2), STEPS (400), STAGE_STEPS (60), STAGES, CORPUS, TOKENIZER
# Dense: hidden 128, 4 layers, intermediate 384 (MiniMind's rule). MoE: 4 routed experts (top-2) + 1 shared, each of
# intermediate 128, so 3 active experts = the dense MLP (+ the 4×128 gate per layer).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/moe}; NP=${NP:-2}; STEPS=${STEPS:-400}; ST=${STAGE_STEPS:-60}
STAGES=${STAGES:-"pretrain sft dpo lora reason distill bench"}
C=${CORPUS:-Tests/Fixtures/corpus}; TOK=${TOKENIZER:-Tests/Fixtures/tokenizers/minimind}   # Tests/Fixtures/README.md
has() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
. scripts/env.sh
. scripts/swift_build.sh
swift_build -c release --product trainer >&2
BIN="$(swift build -c release --show-bin-path)/trainer"
L() { ./launch.sh --no-build -np "$NP" "$@"; }
mkdir -p "$OUT"
P=(--data-path "$C/pretrain.jsonl" --tokenizer "$TOK" --hidden-size 128 --num-hidden-layers 4
   --max-seq-len 128 --batch-size 8 --accumulation-steps 1 --learning-rate 1e-3 --max-steps "$STEPS" --log-interval 10
   --save-interval 1000 --seed 1337)
if has pretrain; then
  L pretrain "${P[@]}" --out-dir "$OUT/dense"
  L pretrain "${P[@]}" --out-dir "$OUT/moe" --use-moe --intermediate-size 128
  python3 scripts/moe_compare.py "$OUT/dense" "$OUT/moe" | tee "$OUT/loss_curves.txt"
  for m in dense moe; do "$BIN" eval --model "$OUT/$m/final" --data "$C/pretrain_eval.jsonl" --max-seq-len 128 2>/dev/null | sed "s/^/$m held-out: /"; done | tee -a "$OUT/loss_curves.txt"
fi
B=$OUT/moe/final; S=$OUT/stages
if has sft; then
  L sft --use-moe --init "$B" --data-path "$C/sft.jsonl" --out-dir "$S/sft" --batch-size 16 --max-seq-len 96 --learning-rate 2e-3 --max-steps "$ST" --epochs 8 --log-interval 10 --save-interval 1000
  "$BIN" generate --model "$S/sft/final" --prompt "《静夜思》的作者是谁？" --chat --max-new-tokens 30 --temperature 0 2>/dev/null; echo
fi
if has dpo; then
  L dpo --use-moe --init "$S/sft/final" --data-path "$C/dpo.jsonl" --out-dir "$S/dpo" --batch-size 4 --max-seq-len 128 --learning-rate 1e-4 --max-steps "$ST" --log-interval 10 --save-interval 1000
fi
if has lora; then
  L lora --use-moe --init "$S/sft/final" --data-path "$C/lora_identity.jsonl" --out-dir "$S/lora" --epochs 100 --batch-size 8 --max-seq-len 64 --learning-rate 5e-3 --lora-rank 8 --max-steps "$ST" --log-interval 10 --save-interval 1000
  "$BIN" lora merge --model "$S/sft/final" --lora "$S/lora/lora.safetensors" --out "$S/lora_merged" 2>/dev/null
  "$BIN" generate --model "$S/lora_merged" --prompt "你是谁？" --chat --max-new-tokens 30 --temperature 0 2>/dev/null; echo
fi
if has reason; then
  L reason --use-moe --init "$S/sft/final" --data-path "$C/reason.jsonl" --out-dir "$S/reason" --batch-size 8 --max-seq-len 256 --learning-rate 1e-3 --max-steps "$ST" --log-interval 10 --save-interval 1000
fi
if has distill; then
  L distill --use-moe --intermediate-size 64 --teacher "$S/sft/final" --tokenizer "$S/sft/final" --hidden-size 64 --num-hidden-layers 2 --data-path "$C/sft.jsonl" --out-dir "$S/distill" --batch-size 16 --max-seq-len 96 --learning-rate 2e-3 --max-steps "$ST" --epochs 20 --seed 7 --log-interval 10 --save-interval 1000
fi
if has bench; then
  "$BIN" bench --hidden-size 512 --num-hidden-layers 8 --batch-size 4 --max-seq-len 512 --steps 3 2>/dev/null | grep -E "tokens/s|config"
  "$BIN" bench --hidden-size 512 --num-hidden-layers 8 --batch-size 4 --max-seq-len 512 --steps 3 --use-moe 2>/dev/null | grep -E "tokens/s|MoE|expert|config"
  "$BIN" bench --hidden-size 512 --num-hidden-layers 8 --batch-size 4 --max-seq-len 512 --steps 3 --use-moe --intermediate-size 448 2>/dev/null | grep -E "tokens/s|MoE|expert|config"
fi
