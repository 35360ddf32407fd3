#!/usr/bin/env python3
"""Greedy agreement of low-precision inference weights with fp32 (issue 14: q8_0 must agree on >= 95 % of tokens).

Runs `trainer eval --task exact-match` (greedy, the MiniMind chat template) on the same prompts twice, with
`--weight-dtype f32` and with `--weight-dtype DTYPE`, keeps every answer (`--answers`), tokenizes both answers with
the model's tokenizer.json (Hugging Face `tokenizers`) and prints one JSON line:
  token_agreement   sum over prompts of the positions i < len(f32 answer) where both answers have the same token,
                    over the f32 answers' token count (the greedy-decoding agreement the issue asks for)
  prefix_agreement  the same with only the tokens before the first difference counted (stricter: once the two
                    continuations part, later equal tokens are not counted)
  identical         answers equal as text, with the count of prompts
Also `trainer eval --task loss` (perplexity) on --ppl-data with both dtypes when given.

  python3 scripts/weight_dtype_agreement.py --model runs/post4/sft/final --data data/splits/sft_test.jsonl \
      --ppl-data Tests/Fixtures/corpus/pretrain_eval.jsonl [--dtype q8_0] [--max-new-tokens 40]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", default=".build/release/trainer")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="SFT jsonl whose prompts are answered")
    ap.add_argument("--dtype", default="q8_0", choices=["bf16", "q8_0"])
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--ppl-data", help="pretrain jsonl for the held-out perplexity of both dtypes")
    ap.add_argument("--max-seq-len", type=int, default=128)
    a = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    out = {"model": a.model, "data": a.data, "dtype": a.dtype, "max_new_tokens": a.max_new_tokens}
    with tempfile.TemporaryDirectory() as d:
        answers = {}
        for dt in ("f32", a.dtype):
            p = os.path.join(d, dt + ".jsonl")
            run([a.trainer, "eval", "--task", "exact-match", "--model", a.model, "--data", a.data,
                 "--max-new-tokens", str(a.max_new_tokens), "--weight-dtype", dt, "--answers", p])
            answers[dt] = [json.loads(l) for l in open(p, encoding="utf-8")]
    ref, low = answers["f32"], answers[a.dtype]
    assert [r["prompt"] for r in ref] == [r["prompt"] for r in low]
    total = same = prefix = identical = 0
    for r, q in zip(ref, low):
        x, y = tok.encode(r["answer"], add_special_tokens=False).ids, tok.encode(q["answer"], add_special_tokens=False).ids
        total += len(x)
        same += sum(1 for i in range(min(len(x), len(y))) if x[i] == y[i])
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        prefix += k
        identical += r["answer"] == q["answer"]
    out.update(prompts=len(ref), f32_tokens=total, token_agreement=same / max(total, 1),
               prefix_agreement=prefix / max(total, 1), identical=identical)
    if a.ppl_data:
        for dt in ("f32", a.dtype):
            j = run([a.trainer, "eval", "--model", a.model, "--data", a.ppl_data, "--max-seq-len", str(a.max_seq_len),
                     "--weight-dtype", dt])
            out[f"ppl_{dt}"] = j["ppl"]
        out["ppl_relative_change"] = out[f"ppl_{a.dtype}"] / out["ppl_f32"] - 1
    print(json.dumps(out, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
