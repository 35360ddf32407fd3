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

--references llama-cpp,torch also measures the same agreement for two other engines, to tell the format's error from
the kernels': `llama_cpp` (llama-cpp-python) greedy-decoding GGUFs that `trainer export --format gguf` writes from the
same model (f32 against Q8_0, or against BF16), and `torch` (transformers) greedy-decoding the model with its 2-D
weights rounded exactly as the dtype stores them (Q8_0: fp16 scale max|w|/127 per 32 weights, round half away from
zero; bf16: round to nearest even) and fp32 activations, against the unrounded model. Both read the prompt ids of
the chat template (default system prompt, as `trainer eval`) and stop at eos (id 2) or --max-new-tokens; they add
`llama_cpp_*` and `torch_*` fields (token_agreement, prefix_agreement, identical, f32_tokens).

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


def agreement(ref, low):
    """token_agreement, prefix_agreement, identical, f32_tokens of two lists of token-id lists."""
    total = same = prefix = identical = 0
    for x, y in zip(ref, low):
        total += len(x)
        same += sum(1 for i in range(min(len(x), len(y))) if x[i] == y[i])
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        prefix += k
        identical += x == y
    return {"token_agreement": same / max(total, 1), "prefix_agreement": prefix / max(total, 1),
            "identical": identical, "f32_tokens": total}


def prompt_ids(tok, data):
    """Token ids of each conversation's first user turn in the MiniMind chat template, ready for the answer."""
    from make_pretrain_mix import render_chat   # this directory (sys.path[0]); the template as training renders it
    return [tok.encode(render_chat(json.loads(line)["conversations"][:1]), add_special_tokens=False).ids
            for line in open(data, encoding="utf-8")]


def llama_cpp_answers(gguf, prompts, n):
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_ctx=512, n_threads=os.cpu_count(), verbose=False)
    out = []
    for ids in prompts:
        llm.reset()
        ans = []
        for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if t == 2 or len(ans) >= n:
                break
            ans.append(t)
        out.append(ans)
    return out


def torch_answers(model_dir, prompts, n, rounding):
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() != 2:
                continue
            if rounding == "bf16":
                p.copy_(p.bfloat16().float())
            elif rounding == "q8_0":
                b = p.reshape(-1, 32)
                d = (b.abs().amax(1, keepdim=True) / 127).half().float()
                q = torch.where(d > 0, torch.sign(b) * torch.floor((b / d).abs() + 0.5), torch.zeros_like(b))
                p.copy_((q.clamp(-127, 127) * d).reshape(p.shape))
        out = []
        for ids in prompts:
            g = m.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=0)
            out.append([t for t in g[0, len(ids):].tolist() if t != 2][:n])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", default=".build/release/trainer")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="SFT jsonl whose prompts are answered")
    ap.add_argument("--dtype", default="q8_0", choices=["bf16", "q8_0"])
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--ppl-data", help="pretrain jsonl for the held-out perplexity of both dtypes")
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--references", default="", help="comma-separated: llama-cpp, torch (see above)")
    a = ap.parse_args()
    refs = [r for r in a.references.split(",") if r]
    unknown = set(refs) - {"llama-cpp", "torch"}
    if unknown:
        sys.exit(f"--references: unknown {sorted(unknown)} (llama-cpp, torch)")
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
    enc = lambda rows: [tok.encode(r["answer"], add_special_tokens=False).ids for r in rows]
    out.update(prompts=len(ref), **agreement(enc(ref), enc(low)))
    out["identical"] = sum(r["answer"] == q["answer"] for r, q in zip(ref, low))
    prompts = prompt_ids(tok, a.data) if refs else []
    if "llama-cpp" in refs:
        with tempfile.TemporaryDirectory() as d:
            gguf = {}
            for dt in ("f32", a.dtype):
                gguf[dt] = os.path.join(d, dt + ".gguf")
                r = subprocess.run([a.trainer, "export", "--model", a.model, "--format", "gguf", "--dtype", dt,
                                    "--out", gguf[dt]], capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"export --dtype {dt} failed:\n{r.stderr}")
            j = agreement(llama_cpp_answers(gguf["f32"], prompts, a.max_new_tokens),
                          llama_cpp_answers(gguf[a.dtype], prompts, a.max_new_tokens))
        out.update({"llama_cpp_" + k: v for k, v in j.items()})
    if "torch" in refs:
        j = agreement(torch_answers(a.model, prompts, a.max_new_tokens, None),
                      torch_answers(a.model, prompts, a.max_new_tokens, a.dtype))
        out.update({"torch_" + k: v for k, v in j.items()})
    if a.ppl_data:
        for dt in ("f32", a.dtype):
            j = run([a.trainer, "eval", "--model", a.model, "--data", a.ppl_data, "--max-seq-len", str(a.max_seq_len),
                     "--weight-dtype", dt])
            out[f"ppl_{dt}"] = j["ppl"]
        out["ppl_relative_change"] = out[f"ppl_{a.dtype}"] / out["ppl_f32"] - 1
    print(json.dumps(out, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
