#!/usr/bin/env bash
# Behaviour check between two trainer binaries (e.g. before and after a refactor): a matrix of short runs — pretrain,
# MoE pretrain, sft, reason, dpo, lora, distill, np 1 and 2, and a --resume — plus the post-training evaluations, run
# with both; prints one line per output file: same / DIFFERENT (models, optimizer states, adapters, trainer_state.json,
# metrics.jsonl without its timing fields, evaluation output).
#
#   scripts/compare_runs.sh OLD_TRAINER NEW_TRAINER [WORKDIR]
#
# Uses the repository's corpus and tokenizer (Tests/Fixtures); a tiny model, a few steps each (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; NEW=$2; W=${3:-/tmp/swiftmind-compare}
C=Tests/Fixtures/corpus; TOK=Tests/Fixtures/tokenizers/minimind
. scripts/env.sh
export OPENBLAS_NUM_THREADS=1
rm -rf "$W"; mkdir -p "$W"

run() {  # run TAG NP args… : with both binaries, outputs in $W/{old,new}/TAG
  local tag=$1 np=$2; shift 2
  for side in old new; do
    local bin=$OLD; [ $side = new ] && bin=$NEW
    local out=$W/$side/$tag
    mkdir -p "$(dirname "$out")"
    local cache=$W/$side/cache
    if [ "$np" = 1 ]; then
      SWIFTMIND_CACHE="$cache" "$bin" "$@" --out-dir "$out" > "$out.log" 2>&1 || { echo "FAILED $side $tag (see $out.log)"; exit 1; }
    else
      SWIFTMIND_CACHE="$cache" mpirun -np "$np" --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS \
        -x OPENBLAS_CORETYPE -x SWIFTMIND_CACHE "$bin" "$@" --out-dir "$out" > "$out.log" 2>&1 || { echo "FAILED $side $tag (see $out.log)"; exit 1; }
    fi
  done
}
evalboth() {  # evalboth TAG args… : evaluation output (stdout) of both binaries
  local tag=$1; shift
  for side in old new; do
    local bin=$OLD; [ $side = new ] && bin=$NEW
    SWIFTMIND_CACHE="$W/$side/cache" "$bin" "$@" 2>/dev/null | sed "s#$W/old#W#g; s#$W/new#W#g" > "$W/$side/eval-$tag.json"
  done
}

M=(--hidden-size 64 --num-hidden-layers 2 --tokenizer "$TOK" --log-interval 1 --save-interval 3 --accumulation-steps 1)
run pretrain-np1 1 pretrain --data-path $C/pretrain.jsonl "${M[@]}" --batch-size 8 --max-seq-len 64 --max-steps 6
run pretrain-np2 2 pretrain --data-path $C/pretrain.jsonl "${M[@]}" --batch-size 4 --max-seq-len 64 --max-steps 6
run moe-np2 2 pretrain --data-path $C/pretrain.jsonl "${M[@]}" --batch-size 4 --max-seq-len 64 --max-steps 4 --use-moe
BASE=$W/old/pretrain-np2/final   # the same bytes on both sides when the first lines say "same"
run sft-np2 2 sft --init "$BASE" --data-path $C/sft.jsonl "${M[@]}" --batch-size 4 --max-seq-len 96 --max-steps 6 --learning-rate 1e-3
run sft-np1 1 sft --init "$BASE" --data-path $C/sft.jsonl "${M[@]}" --batch-size 8 --max-seq-len 96 --max-steps 6 --learning-rate 1e-3
run reason-np2 2 reason --init "$BASE" --data-path $C/reason.jsonl "${M[@]}" --batch-size 2 --max-seq-len 256 --max-steps 4 --learning-rate 1e-3
run dpo-np2 2 dpo --init "$BASE" --data-path $C/dpo.jsonl "${M[@]}" --batch-size 2 --max-seq-len 128 --max-steps 4 --learning-rate 1e-4
run lora-np2 2 lora --init "$BASE" --data-path $C/lora_identity.jsonl "${M[@]}" --batch-size 4 --max-seq-len 64 --max-steps 4 --learning-rate 1e-3
run distill-np2 2 distill --init "$BASE" --teacher "$BASE" --data-path $C/sft.jsonl "${M[@]}" --batch-size 4 --max-seq-len 96 --max-steps 4
# --resume: the sft run again from its step-3 checkpoint, 3 more steps.
for side in old new; do rm -rf "$W/$side/sft-np2/checkpoint-6" "$W/$side/sft-np2/final"; done
run sft-np2 2 sft --init "$BASE" --data-path $C/sft.jsonl "${M[@]}" --batch-size 4 --max-seq-len 96 --max-steps 6 --learning-rate 1e-3 --resume

SFT=$W/old/sft-np2/final
evalboth loss eval --model "$BASE" --data $C/pretrain_eval.jsonl --max-seq-len 64
evalboth sft-loss eval --task sft-loss --model "$SFT" --data $C/sft.jsonl --max-seq-len 96
evalboth author eval --task exact-match --model "$SFT" --data $C/sft.jsonl --filter "的作者是谁" --match author --max-new-tokens 16
evalboth preference eval --task preference --model "$SFT" --data $C/dpo.jsonl --max-seq-len 128
evalboth format eval --task format --model "$SFT" --data $C/reason.jsonl --max-new-tokens 32

same=0; diff=0
while IFS= read -r f; do
  rel=${f#$W/old/}
  n=$W/new/$rel
  case "$rel" in
    *.log|cache/*|*report.html) continue ;;   # report.html holds the timings and the time it was written
    *metrics.jsonl)
      a=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l); [d.pop(k,None) for k in list(d) if k in ("tokens_per_s","elapsed_s","eta_s","step_time_s","comm_wait_s","unhidden_comm_fraction","comm_unhidden_share","rank_step_time_s","rollout_tokens_per_s")]; print(json.dumps(d,sort_keys=True))' "$f")
      b=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l); [d.pop(k,None) for k in list(d) if k in ("tokens_per_s","elapsed_s","eta_s","step_time_s","comm_wait_s","unhidden_comm_fraction","comm_unhidden_share","rank_step_time_s","rollout_tokens_per_s")]; print(json.dumps(d,sort_keys=True))' "$n" 2>/dev/null || echo missing)
      [ "$a" = "$b" ] && r=same || r=DIFFERENT ;;
    *) cmp -s "$f" "$n" && r=same || r=DIFFERENT ;;
  esac
  echo "$r $rel"
  [ $r = same ] && same=$((same + 1)) || diff=$((diff + 1))
done < <(find "$W/old" -type f | sort)
echo "compare_runs: $same same, $diff different"
[ $diff = 0 ]
