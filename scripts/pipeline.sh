#!/usr/bin/env bash
# The post-training acceptance run (issues 5 and 17) on the clean splits of data/splits/ (data/splits/README.md):
# every stage trains on its _train file only; each stage's settings are chosen from a small grid on its _val file
# only; then each test figure is computed once, with the chosen model, on the _test files. Every training stage runs
# with ./launch.sh -np $NP.
#   $OUT/validation.jsonl  one line per grid candidate and validation figure ("split": "validation", "stage", "setting")
#   $OUT/results.jsonl     the choices ("split": "choice") and the test figures ("split": "test"), each with its count
#                          and 95% interval (Wilson for rates; mean ± 1.96·s/√n for margins and paired differences)
#   $OUT/summary.md        the test figures as a table (the closing note)
# With ACCEPT=docs/acceptance/post_run5 the three files are also copied to ${ACCEPT}_{validation.jsonl,results.jsonl,summary.md}.
#
#   BASE=/path/to/pretrained/final scripts/pipeline.sh
#   PIPELINE_SMOKE=1 CONFIG=debug OUT=/tmp/smoke scripts/pipeline.sh   # proves it runs end to end in minutes: tiny
#       base (hidden 64, 2 layers, 20 steps), 2 optimizer steps per training run, the first 2 candidates of each grid,
#       at most 3 prompts per generation figure; its figures mean nothing.
# Knobs (environment): BASE (pretrained model directory; default: pretrain one with ./launch.sh first), OUT (runs/post),
# SPLITS (data/splits), CORPUS (Tests/Fixtures/corpus: pretrain.jsonl only), TOKENIZER (Tests/Fixtures/tokenizers/minimind),
# NP (2), CONFIG (release | debug), HIDDEN (256), PRETRAIN_EPOCHS (1), PRETRAIN_POEM_REPEAT (30),
# PRETRAIN_CHAT_REPEAT (4: copies of each sft_train conversation mixed into pretraining; 0 = none),
# PRETRAIN_LAYOUTS ("0,6": the layouts the poem copies cycle through; layout 6 states the title twice, which teaches
# the base to copy a title, scripts/make_pretrain_mix.py), PIPELINE_SMOKE (0),
# SFT_LR_GRID ("1e-4 3e-4 1e-3": lr of the first SFT run; chosen by validation SFT loss), SFT_EPOCHS (3), SFT_SEQ (96),
# SFT2_EPOCHS (1), SFT2_LR (1e-4) (the second SFT run, from the chosen first one; fixed; the base has already seen
# each sft_train conversation 4 times, so SFT is short and gentle),
# DPO_LR_GRID ("5e-6 1e-5 3e-5"; chosen by validation preference accuracy), DPO_EPOCHS (2),
# LORA_GRID ("1e-3:20 1e-3:40 2e-3:10 2e-3:20", lr:epochs; chosen by validation exact-name rate among settings whose validation
# author accuracy drops ≤ 10 points, else the smallest drop), LORA_RANK (16), LORA_REPLAY (96: sft_train rows mixed into the
# adapter's training file with the 32 identity rows; 0 = identity rows only),
# REASON_LR_GRID ("1e-3 5e-4"; chosen by validation answer correctness, then format rate), REASON_LR (sets a one-value grid),
# REASON_EPOCHS (6), REASON_SEQ (512), REASON_MAX_NEW (2048),
# DISTILL_T_GRID ("1 2"; chosen by validation SFT loss), DISTILL_STEPS (200),
# RM_LR_GRID ("1e-4 3e-5"; the reward model's lr, chosen by validation pair accuracy), RM_EPOCHS (2),
# GRPO_LR_GRID ("1e-5 5e-5"; chosen by validation answer correctness, then format rate), GRPO_EPOCHS (1),
# GRPO_G (4: --num-generations), GRPO_MAX_GEN (384: --max-gen-len), GRPO_BETA (0.02), GRPO_REWARD (answer: --reward-rule),
# STAGES (space-separated subset of: pretrain sft dpo reward lora reason distill grpo; later stages need the SFT model in
# $OUT/sft; grpo needs the reasoning model chosen by an earlier run of the reason stage, read from results.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/post}
NP=${NP:-2}
CONFIG=${CONFIG:-release}
SP=${SPLITS:-data/splits}                               # train / val / test files (scripts/make_splits.py)
C=${CORPUS:-Tests/Fixtures/corpus}                      # pretrain.jsonl
TOK=${TOKENIZER:-Tests/Fixtures/tokenizers/minimind}    # MiniMind's tokenizer
STAGES=${STAGES:-"pretrain sft dpo reward lora reason distill grpo"}
SMOKE=${PIPELINE_SMOKE:-0}
mkdir -p "$OUT"
RES=$OUT/results.jsonl
VAL=$OUT/validation.jsonl

SFT_LR_GRID=${SFT_LR_GRID:-"1e-4 3e-4 1e-3"}
DPO_LR_GRID=${DPO_LR_GRID:-"5e-6 1e-5 3e-5"}
LORA_GRID=${LORA_GRID:-"1e-3:20 1e-3:40 2e-3:10 2e-3:20"}
REASON_LR_GRID=${REASON_LR:-${REASON_LR_GRID:-"1e-3 5e-4"}}
DISTILL_T_GRID=${DISTILL_T_GRID:-"1 2"}
RM_LR_GRID=${RM_LR_GRID:-"1e-4 3e-5"}
GRPO_LR_GRID=${GRPO_LR_GRID:-"1e-5 5e-5"}
HID=${HIDDEN:-256}; LAYERS=4; PRE=(--epochs "${PRETRAIN_EPOCHS:-1}")
MS=(); LIM=(); MAXNEW=40; RMAXNEW=${REASON_MAX_NEW:-2048}
first2() { echo "$1"; }
if [ "$SMOKE" = 1 ]; then
  HID=${HIDDEN:-64}; LAYERS=2; PRE=(--max-steps 20); MS=(--max-steps 2); LIM=(--limit 3); MAXNEW=8; RMAXNEW=16
  first2() { echo "$1" | awk '{print $1, $2}'; }
  SFT_LR_GRID=$(first2 "$SFT_LR_GRID"); DPO_LR_GRID=$(first2 "$DPO_LR_GRID"); LORA_GRID=$(first2 "$LORA_GRID")
  REASON_LR_GRID=$(first2 "$REASON_LR_GRID"); DISTILL_T_GRID=$(first2 "$DISTILL_T_GRID"); RM_LR_GRID=$(first2 "$RM_LR_GRID")
  GRPO_LR_GRID=$(first2 "$GRPO_LR_GRID")
fi
for f in sft dpo reason lora_identity; do for s in train val test; do
  [ -f "$SP/${f}_$s.jsonl" ] || { echo "missing $SP/${f}_$s.jsonl (run python3 scripts/make_splits.py)" >&2; exit 1; }
done; done

. scripts/env.sh
. scripts/swift_build.sh
swift_build -c "$CONFIG" --product trainer >&2
BIN="$(swift build -c "$CONFIG" --show-bin-path)/trainer"
LF=(--no-build); [ "$CONFIG" = debug ] && LF+=(--debug)
L() { ./launch.sh "${LF[@]}" -np "$NP" "$@" "${MS[@]}"; }
has() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# tag SPLIT STAGE SETTING: adds the three fields to each JSON line of stdin.
tag() { python3 -c 'import json, sys
for l in sys.stdin:
    j = json.loads(l); j.update(split=sys.argv[1], stage=sys.argv[2], setting=sys.argv[3])
    print(json.dumps(j, ensure_ascii=False, sort_keys=True), flush=True)' "$@"; }
# V STAGE SETTING eval-args…: a validation figure; T STAGE eval-args…: a test figure (each computed once).
V() { local st=$1 se=$2; shift 2; "$BIN" eval "$@" 2>>"$OUT/eval.log" | tag validation "$st" "$se" | tee -a "$VAL"; }
T() { local st=$1; shift; "$BIN" eval "$@" 2>>"$OUT/eval.log" | tag test "$st" "" | tee -a "$RES"; }
# pick STAGE KEY max|min: the setting of the validation line of STAGE with the best KEY (the first on ties); records
# the choice in results.jsonl. LoRA: see pick_lora.
pick() { python3 - "$VAL" "$1" "$2" "$3" <<'PY' | tee -a "$RES" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["setting"])'
import json, sys
path, stage, key, mode = sys.argv[1:]
rows = [j for j in map(json.loads, open(path)) if j.get("split") == "validation" and j["stage"] == stage]
best = (max if mode == "max" else min)(rows, key=lambda j: j[key])
print(json.dumps({"split": "choice", "stage": stage, "setting": best["setting"], "by": f"validation {key} ({mode})",
                  "value": best[key], "candidates": {j["setting"]: j[key] for j in rows}}, ensure_ascii=False, sort_keys=True))
PY
}
# pick_answer STAGE: the setting of STAGE's validation line with the best reasoning answer correctness, then format
# rate (the first on ties); records the choice in results.jsonl.
pick_answer() { python3 - "$VAL" "$1" <<'PY' | tee -a "$RES" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["setting"])'
import json, sys
path, stage = sys.argv[1:]
rows = [j for j in map(json.loads, open(path)) if j.get("split") == "validation" and j["stage"] == stage]
best = max(rows, key=lambda j: (j["answer_accuracy"], j["format_rate"]))
print(json.dumps({"split": "choice", "stage": stage, "setting": best["setting"], "by": "validation answer_accuracy, then format_rate",
                  "candidates": {j["setting"]: [j["answer_accuracy"], j["format_rate"]] for j in rows}}, ensure_ascii=False, sort_keys=True))
PY
}
# chosen STAGE: the setting recorded by the last choice of STAGE in results.jsonl (for a stage run on its own).
chosen() { python3 - "$RES" "$1" <<'PY'
import json, sys
rows = [j for j in map(json.loads, open(sys.argv[1])) if j.get("split") == "choice" and j["stage"] == sys.argv[2]]
if not rows: sys.exit(f"no choice for stage {sys.argv[2]} in {sys.argv[1]}: run that stage first")
print(rows[-1]["setting"])
PY
}

# 0. Pretrained base (hidden 256, 4 layers, 4.46 M parameters) unless BASE is given, on pretrain.jsonl with each of
#    its 400 poem documents repeated PRETRAIN_POEM_REPEAT more times (scripts/make_pretrain_mix.py: the poems are 2.5 %
#    of the corpus, and a base that saw each once per epoch did not learn who wrote them), half of those copies in a
#    layout that writes the title twice (PRETRAIN_LAYOUTS: a base that never saw repeated text did not copy the
#    asked title into its answer, docs/POST_TRAINING.md run 7), and each sft_train
#    conversation PRETRAIN_CHAT_REPEAT times (mixed training: a base that saw the poems only in their own layout could
#    not be taught by SFT to answer questions about held-out ones, docs/POST_TRAINING.md run 5); then the knowledge probe
#    (scripts/knowledge_probe.py, needs torch + transformers) on the validation author pairs, recorded as a
#    validation line.
PROBE_SETTING="base=${BASE:-}"
if [ -z "${BASE:-}" ]; then
  BASE=$OUT/pretrain/final; PROBE_SETTING="repeat=${PRETRAIN_POEM_REPEAT:-30} layouts=${PRETRAIN_LAYOUTS:-0,6} chat=${PRETRAIN_CHAT_REPEAT:-4}"
  if has pretrain && [ ! -f "$BASE/model.safetensors" ]; then
    CHAT=(); [ "${PRETRAIN_CHAT_REPEAT:-4}" -gt 0 ] && CHAT=(--chat "$SP/sft_train.jsonl" --chat-repeat "${PRETRAIN_CHAT_REPEAT:-4}")
    python3 scripts/make_pretrain_mix.py "$C/pretrain.jsonl" "$OUT/pretrain_mix.jsonl" --repeat "${PRETRAIN_POEM_REPEAT:-30}" \
      --layout-list "${PRETRAIN_LAYOUTS:-0,6}" "${CHAT[@]}" >&2
    ./launch.sh "${LF[@]}" -np "$NP" pretrain --data-path "$OUT/pretrain_mix.jsonl" --tokenizer "$TOK" --out-dir "$OUT/pretrain" \
      --hidden-size "$HID" --num-hidden-layers "$LAYERS" --max-seq-len 128 --batch-size 8 --accumulation-steps 1 \
      --learning-rate 1e-3 "${PRE[@]}" --log-interval 100 --save-interval 1000
  fi
fi
# The probe of the base (once per OUT; a failure is reported and does not stop the run).
if has pretrain && [ -f "$BASE/model.safetensors" ] && ! grep -qs '"stage": "pretrain"' "$VAL"; then
  if ! python3 -c "import torch, transformers" 2>/dev/null; then
    echo "knowledge probe skipped: python3 lacks torch or transformers" >&2
  elif python3 scripts/knowledge_probe.py "$BASE" "$SP/dpo_val.jsonl" > "$OUT/knowledge_probe.json" 2>>"$OUT/eval.log"; then
    tag validation pretrain "$PROBE_SETTING" < "$OUT/knowledge_probe.json" | tee -a "$VAL"
  else
    echo "knowledge probe failed (see $OUT/eval.log); the run goes on" >&2
  fi
fi
SFT=$OUT/sft/final
AUTH=(--filter "的作者是谁" --match author --max-new-tokens "$MAXNEW" "${LIM[@]}")
RECITE=(--filter "请背诵" --match first-line --max-new-tokens "$MAXNEW" "${LIM[@]}")   # right poem: the first line

# 1. SFT on sft_train in two runs: the first run's lr from SFT_LR_GRID (SFT_EPOCHS epochs), chosen by the lowest
#    validation SFT loss; then SFT2_EPOCHS more at SFT2_LR from it (makes the answers sturdy enough for LoRA).
#    Test: author accuracy on the held-out poems of sft_test, the first-line rate of its recite prompts, held-out SFT loss.
if has sft; then
  for lr in $SFT_LR_GRID; do
    L sft --init "$BASE" --data-path "$SP/sft_train.jsonl" --out-dir "$OUT/sft1_lr$lr" --epochs "${SFT_EPOCHS:-3}" \
      --batch-size 16 --max-seq-len "${SFT_SEQ:-96}" --learning-rate "$lr" --log-interval 20 --save-interval 1000
    V sft "lr=$lr" --task sft-loss --model "$OUT/sft1_lr$lr/final" --data "$SP/sft_val.jsonl" --max-seq-len "${SFT_SEQ:-96}"
  done
  lr=$(pick sft loss min); lr=${lr#lr=}
  L sft --init "$OUT/sft1_lr$lr/final" --data-path "$SP/sft_train.jsonl" --out-dir "$OUT/sft" --epochs "${SFT2_EPOCHS:-1}" \
    --batch-size 16 --max-seq-len "${SFT_SEQ:-96}" --learning-rate "${SFT2_LR:-1e-4}" --log-interval 50 --save-interval 1000
  T sft --task exact-match --model "$SFT" --data "$SP/sft_test.jsonl" "${AUTH[@]}" --answers "$OUT/sft_author_answers.jsonl"
  T sft --task exact-match --model "$SFT" --data "$SP/sft_test.jsonl" "${RECITE[@]}" --answers "$OUT/sft_recite_answers.jsonl"
  T sft --task sft-loss --model "$SFT" --data "$SP/sft_test.jsonl" --max-seq-len "${SFT_SEQ:-96}"
fi

# 2. DPO from the SFT model on dpo_train; lr from DPO_LR_GRID by validation preference accuracy (π_c > π_r).
#    Test: preference accuracy before (SFT) and after (DPO) with the paired difference; accuracy and mean implicit
#    reward margin against the SFT reference; greedy answers on sft_test judged by the pairs' rules: right author
#    (author questions) and right poem (recite prompts: the first line is the poem's), beside the SFT model's.
if has dpo; then
  for lr in $DPO_LR_GRID; do
    L dpo --init "$SFT" --data-path "$SP/dpo_train.jsonl" --out-dir "$OUT/dpo_lr$lr" --epochs "${DPO_EPOCHS:-2}" \
      --batch-size 4 --max-seq-len 128 --learning-rate "$lr" --log-interval 20 --save-interval 1000
    V dpo "lr=$lr" --task preference --model "$OUT/dpo_lr$lr/final" --data "$SP/dpo_val.jsonl" --max-seq-len 128
  done
  lr=$(pick dpo preference_accuracy max); lr=${lr#lr=}
  DPO=$OUT/dpo_lr$lr/final
  T dpo --task preference --model "$DPO" --baseline "$SFT" --data "$SP/dpo_test.jsonl" --max-seq-len 128
  T dpo --task preference --model "$DPO" --reference "$SFT" --data "$SP/dpo_test.jsonl" --max-seq-len 128
  T dpo --task exact-match --model "$DPO" --data "$SP/sft_test.jsonl" "${AUTH[@]}" --answers "$OUT/dpo_author_answers.jsonl"
  T dpo --task exact-match --model "$DPO" --data "$SP/sft_test.jsonl" "${RECITE[@]}" --answers "$OUT/dpo_recite_answers.jsonl"
fi

# 2b. Reward model (Bradley–Terry, backbone from the SFT model) on dpo_train; lr from RM_LR_GRID by validation pair
#     accuracy (r_chosen > r_rejected). Test: held-out pair accuracy on dpo_test with its 95% Wilson interval.
if has reward; then
  for lr in $RM_LR_GRID; do
    L reward --init "$SFT" --data-path "$SP/dpo_train.jsonl" --out-dir "$OUT/reward_lr$lr" --epochs "${RM_EPOCHS:-2}" \
      --batch-size 4 --max-seq-len 128 --learning-rate "$lr" --log-interval 20 --save-interval 1000
    V reward "lr=$lr" --task preference --reward-model "$OUT/reward_lr$lr/final" --data "$SP/dpo_val.jsonl" --max-seq-len 128
  done
  lr=$(pick reward pair_accuracy max); lr=${lr#lr=}
  T reward --task preference --reward-model "$OUT/reward_lr$lr/final" --data "$SP/dpo_test.jsonl" --max-seq-len 128
fi

# 3. LoRA identity (rank LORA_RANK) on top of the SFT model, on lora_identity_train plus LORA_REPLAY rows of
#    sft_train; lr:epochs from LORA_GRID by
#    validation: the highest exact-name rate on lora_identity_val among settings whose author accuracy on sft_val
#    (adapter merged) is at most 10 points below the SFT model's; if none, the smallest drop.
#    Test: exact-name rate on lora_identity_test; author accuracy on sft_test with the adapter.
if has lora; then
  V lora-base "sft" --task exact-match --model "$SFT" --data "$SP/sft_val.jsonl" "${AUTH[@]}"
  # The adapter's training file: the identity rows plus LORA_REPLAY sft_train rows (a seeded draw), so that learning
  # the new identity does not overwrite what the model answers about poems (replay against forgetting).
  python3 - "$SP/lora_identity_train.jsonl" "$SP/sft_train.jsonl" "${LORA_REPLAY:-96}" "$OUT/lora_train.jsonl" <<'PY'
import random, sys
ident = [l for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
sft = [l for l in open(sys.argv[2], encoding="utf-8") if l.strip()]
rng = random.Random(17)
rows = ident + rng.sample(sft, min(int(sys.argv[3]), len(sft)))
rng.shuffle(rows)
open(sys.argv[4], "w", encoding="utf-8").write("".join(l if l.endswith("\n") else l + "\n" for l in rows))
PY
  for g in $LORA_GRID; do
    lr=${g%%:*}; ep=${g##*:}; d=$OUT/lora_lr${lr}_e$ep
    L lora --init "$SFT" --data-path "$OUT/lora_train.jsonl" --out-dir "$d" --epochs "$ep" \
      --batch-size 8 --max-seq-len 64 --learning-rate "$lr" --lora-rank "${LORA_RANK:-16}" --log-interval 10 --save-interval 1000
    V lora-name "$g" --task exact-match --match name --model "$SFT" --lora "$d/lora.safetensors" --data "$SP/lora_identity_val.jsonl" \
      --max-new-tokens "$MAXNEW" "${LIM[@]}"
    V lora-author "$g" --task exact-match --model "$SFT" --lora "$d/lora.safetensors" --data "$SP/sft_val.jsonl" "${AUTH[@]}"
  done
  g=$(python3 - "$VAL" <<'PY' | tee -a "$RES" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["setting"])'
import json, sys
rows = [j for j in map(json.loads, open(sys.argv[1])) if j.get("split") == "validation"]
base = [j for j in rows if j["stage"] == "lora-base"][-1]["author_accuracy"]
name = {j["setting"]: j["name_rate"] for j in rows if j["stage"] == "lora-name"}
drop = {j["setting"]: base - j["author_accuracy"] for j in rows if j["stage"] == "lora-author"}
ok = [s for s in name if drop[s] <= 0.10 + 1e-9]
best = max(ok, key=lambda s: (name[s], -drop[s])) if ok else min(name, key=lambda s: drop[s])
print(json.dumps({"split": "choice", "stage": "lora", "setting": best, "by": "validation name_rate with author drop <= 0.10",
                  "candidates": {s: {"name_rate": name[s], "author_drop": drop[s]} for s in name}}, ensure_ascii=False, sort_keys=True))
PY
)
  lr=${g%%:*}; ep=${g##*:}; d=$OUT/lora_lr${lr}_e$ep
  T lora --task exact-match --match name --model "$SFT" --lora "$d/lora.safetensors" --data "$SP/lora_identity_test.jsonl" \
    --max-new-tokens "$MAXNEW" "${LIM[@]}" --answers "$OUT/lora_name_answers.jsonl"
  T lora --task exact-match --model "$SFT" --lora "$d/lora.safetensors" --data "$SP/sft_test.jsonl" "${AUTH[@]}" \
    --answers "$OUT/lora_author_answers.jsonl"
  "$BIN" lora merge --model "$SFT" --lora "$d/lora.safetensors" --out "$OUT/lora_merged" 2>/dev/null
fi

# 4. Reasoning SFT from the SFT model on reason_train; lr from REASON_LR_GRID by validation answer correctness (the
#    number in <answer> equals the reference's), then format rate. Test: both on reason_test.
if has reason; then
  for lr in $REASON_LR_GRID; do
    L reason --init "$SFT" --data-path "$SP/reason_train.jsonl" --out-dir "$OUT/reason_lr$lr" --epochs "${REASON_EPOCHS:-6}" \
      --batch-size 8 --max-seq-len "${REASON_SEQ:-512}" --learning-rate "$lr" --log-interval 20 --save-interval 1000
    V reason "lr=$lr" --task format --model "$OUT/reason_lr$lr/final" --data "$SP/reason_val.jsonl" --max-new-tokens "$RMAXNEW" "${LIM[@]}"
  done
  lr=$(pick_answer reason)
  lr=${lr#lr=}
  T reason --task format --model "$OUT/reason_lr$lr/final" --data "$SP/reason_test.jsonl" --max-new-tokens "$RMAXNEW" "${LIM[@]}" \
    --answers "$OUT/reason_answers.jsonl"
fi

# 5. Distillation of a smaller student (hidden 64, 2 layers, random init) from the SFT model — its teacher trained on
#    sft_train only — on sft_train; T from DISTILL_T_GRID by validation SFT loss. Test: held-out SFT loss on sft_test
#    of the student, of the same student trained by plain SFT (same seed, data, steps), and of the teacher.
if has distill; then
  S=(--tokenizer "$SFT" --hidden-size 64 --num-hidden-layers 2 --data-path "$SP/sft_train.jsonl" --batch-size 16
     --max-seq-len 96 --learning-rate 2e-3 --max-steps "${DISTILL_STEPS:-200}" --epochs 20 --seed 7 --log-interval 20 --save-interval 1000)
  for t in $DISTILL_T_GRID; do
    L distill --teacher "$SFT" --out-dir "$OUT/distill_T$t" --temperature "$t" "${S[@]}"
    V distill "T=$t" --task sft-loss --model "$OUT/distill_T$t/final" --data "$SP/sft_val.jsonl" --max-seq-len 96
  done
  t=$(pick distill loss min); t=${t#T=}
  L sft --out-dir "$OUT/student_sft" "${S[@]}"
  T distill --task sft-loss --model "$OUT/distill_T$t/final" --data "$SP/sft_test.jsonl" --max-seq-len 96
  T distill-baseline --task sft-loss --model "$OUT/student_sft/final" --data "$SP/sft_test.jsonl" --max-seq-len 96
  T distill-teacher --task sft-loss --model "$SFT" --data "$SP/sft_test.jsonl" --max-seq-len 96
fi

# 6. GRPO (issue 18) from the chosen reasoning model on the reason_train prompts (each row's reference answer kept
#    for the reward), --reward-rule GRPO_REWARD (answer: 1 when the number in <answer> equals the reference's),
#    GRPO_G rollouts per prompt at temperature 0.8, KL to the frozen reasoning model (β GRPO_BETA); lr from
#    GRPO_LR_GRID by validation answer correctness, then format rate. Test: format rate and answer correctness on
#    reason_test beside the reasoning model's (--baseline: the paired difference with its interval); the run's KL
#    and reward from its metrics.jsonl.
if has grpo; then
  lr=$(chosen reason); RSN=$OUT/reason_lr${lr#lr=}/final
  [ -f "$RSN/model.safetensors" ] || { echo "missing the reasoning model $RSN (run the reason stage)" >&2; exit 1; }
  for lr in $GRPO_LR_GRID; do
    L grpo --init "$RSN" --data-path "$SP/reason_train.jsonl" --out-dir "$OUT/grpo_lr$lr" --epochs "${GRPO_EPOCHS:-1}" \
      --batch-size 2 --num-generations "${GRPO_G:-4}" --max-gen-len "${GRPO_MAX_GEN:-384}" --max-seq-len 128 \
      --beta "${GRPO_BETA:-0.02}" --reward-rule "${GRPO_REWARD:-answer}" --learning-rate "$lr" --threads 1 \
      --log-interval 5 --save-interval 1000
    V grpo "lr=$lr" --task format --model "$OUT/grpo_lr$lr/final" --data "$SP/reason_val.jsonl" --max-new-tokens "$RMAXNEW" "${LIM[@]}"
  done
  lr=$(pick_answer grpo)
  lr=${lr#lr=}
  T grpo --task format --model "$OUT/grpo_lr$lr/final" --baseline "$RSN" --data "$SP/reason_test.jsonl" --max-new-tokens "$RMAXNEW" \
    "${LIM[@]}" --answers "$OUT/grpo_answers.jsonl"
  # The chosen run's training figures (rank 0's metrics.jsonl): KL (k3, mean per completion) and reward, first and
  # last tenth of the logged steps, and the largest KL logged.
  python3 - "$OUT/grpo_lr$lr/metrics.jsonl" "lr=$lr" <<'PY' | tee -a "$RES"
import json, sys
rows = [j for j in map(json.loads, open(sys.argv[1])) if "kl" in j]
k = max(1, len(rows) // 10)
mean = lambda xs: sum(xs) / len(xs)
print(json.dumps({"split": "train", "stage": "grpo", "setting": sys.argv[2], "task": "grpo-run", "logged_steps": len(rows),
                  "last_step": rows[-1]["step"], "kl_first": mean([j["kl"] for j in rows[:k]]), "kl_last": mean([j["kl"] for j in rows[-k:]]),
                  "kl_max": max(j["kl"] for j in rows), "reward_first": mean([j["reward"] for j in rows[:k]]),
                  "reward_last": mean([j["reward"] for j in rows[-k:]])}, sort_keys=True))
PY
fi

# The closing note: every test figure with its count and interval (a run of stage 0 alone has none yet).
touch "$RES"
python3 - "$RES" "$SP/manifest.json" > "$OUT/summary.md" <<'PY'
import json, sys
rows = [j for j in map(json.loads, open(sys.argv[1])) if j.get("split") in ("test", "choice", "train")]
base = json.load(open(sys.argv[2]))["test_author_majority_baseline"]
pct = lambda x: f"{100 * x:.1f}%"
ci = lambda c: f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"
print("| stage | figure | value | count | 95% interval |\n| --- | --- | --- | --- | --- |")
for j in rows:
    st = j["stage"]
    if j["split"] == "choice":
        print(f"| {st} | chosen on validation ({j['by']}) | {j['setting']} | | |"); continue
    if j["split"] == "train":
        print(f"| {st} | training run ({j['logged_steps']} logged steps to step {j['last_step']}): KL first/last tenth, max | "
              f"{j['kl_first']:.4g} / {j['kl_last']:.4g}, max {j['kl_max']:.4g} | | |")
        print(f"| {st} | training run: mean reward, first / last tenth | {j['reward_first']:.3f} / {j['reward_last']:.3f} | | |"); continue
    t = j["task"]
    if t == "exact-match":
        k = next(x for x in ("name_rate", "first_line_rate", "author_accuracy") if x in j)
        print(f"| {st} | {k} | {pct(j[k])} | {j['hits']}/{j['n']} | {ci(j['ci95'])} |")
        if st == "sft" and k == "author_accuracy":
            print(f"| sft | always the most frequent training author ({base['author']}) | {pct(base['hits'] / base['n'])} | {base['hits']}/{base['n']} | |")
    elif t == "format":
        for k, h, c in (("format_rate", "hits", "ci95"), ("answer_accuracy", "answer_hits", "answer_ci95")):
            if "baseline" in j:
                print(f"| {st} | {k} before (reasoning model) | {pct(j['baseline_' + k])} | {j['baseline_' + k + '_hits']}/{j['n']} | {ci(j['baseline_' + k + '_ci95'])} |")
            print(f"| {st} | {k} | {pct(j[k])} | {j[h]}/{j['n']} | {ci(j[c])} |")
            if "baseline" in j:
                ex = "excludes" if j[k + "_difference_excludes_no_change"] else "does not exclude"
                print(f"| {st} | {k}: paired difference after − before ({ex} no change) | {100 * j[k + '_difference']:+.1f} pts | {j['n']} prompts | {ci(j[k + '_difference_ci95'])} |")
    elif t == "preference":
        if "reward_model" in j:
            print(f"| {st} | reward model pair accuracy (r_chosen > r_rejected) | {pct(j['pair_accuracy'])} | {j['correct']}/{j['pairs']} | {ci(j['pair_accuracy_wilson95'])} |")
        elif "baseline" in j:
            print(f"| {st} | preference accuracy before (SFT) | {pct(j['baseline_preference_accuracy'])} | {j['baseline_hits']}/{j['pairs']} | {ci(j['baseline_ci95'])} |")
            print(f"| {st} | preference accuracy after (DPO) | {pct(j['preference_accuracy'])} | {j['hits']}/{j['pairs']} | {ci(j['ci95'])} |")
            ex = "excludes" if j["difference_excludes_no_change"] else "does not exclude"
            print(f"| {st} | paired difference after − before ({ex} no change) | {100 * j['difference']:+.1f} pts | {j['pairs']} pairs | {ci(j['difference_ci95'])} |")
        else:
            print(f"| {st} | preference accuracy vs the SFT reference | {pct(j['preference_accuracy'])} | {j['hits']}/{j['pairs']} | {ci(j['ci95'])} |")
            c = j["mean_implicit_reward_margin_ci95"]
            print(f"| {st} | mean implicit reward margin (β {j['beta']}) | {j['mean_implicit_reward_margin']:.4g} | {j['pairs']} pairs | [{c[0]:.4g}, {c[1]:.4g}] |")
    elif t == "sft-loss":
        print(f"| {st} | held-out SFT loss | {j['loss']:.4f} | {j['tokens']} tokens | |")
PY
cat "$OUT/summary.md"
if [ -n "${ACCEPT:-}" ]; then
  cp "$VAL" "${ACCEPT}_validation.jsonl"; cp "$RES" "${ACCEPT}_results.jsonl"; cp "$OUT/summary.md" "${ACCEPT}_summary.md"
fi
echo "results: $RES (validation: $VAL)"
