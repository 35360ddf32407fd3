"""llama.cpp's decode speed beside `trainer bench-decode` (same shape: random prompt, prefill, greedy decode).

usage: python3 scripts/bench_decode_llama_cpp.py FILE.gguf [--prompt-tokens 128] [--new-tokens 256] [--repeats 3] [--threads 2]
Prefill = one eval of the prompt; decode tokens/s = new tokens / time of the single-token evals (greedy sampling
included). Best of --repeats runs after one warm-up; prints one JSON line. Needs llama-cpp-python.
"""
import argparse, json, random, time
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("gguf")
ap.add_argument("--prompt-tokens", type=int, default=128)
ap.add_argument("--new-tokens", type=int, default=256)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
llm = Llama(model_path=a.gguf, n_ctx=a.prompt_tokens + a.new_tokens + 8, n_threads=a.threads, n_batch=512, verbose=False)
rng = random.Random(7)
prompt = [3 + rng.randrange(llm.n_vocab() - 3) for _ in range(a.prompt_tokens)]
best_prefill = best_decode = float("inf")
for r in range(a.repeats + 1):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    tok = llm.sample(top_k=1, temp=0.0, repeat_penalty=1.0)
    t1 = time.perf_counter()
    for _ in range(a.new_tokens - 1):
        llm.eval([tok])
        tok = llm.sample(top_k=1, temp=0.0, repeat_penalty=1.0)
    t2 = time.perf_counter()
    if r == 0:
        continue
    best_prefill = min(best_prefill, t1 - t0)
    best_decode = min(best_decode, (t2 - t1) / (a.new_tokens - 1))
print(json.dumps({"engine": "llama.cpp", "file": a.gguf, "prompt_tokens": a.prompt_tokens, "prefill_ms": round(best_prefill * 1e3, 1),
                  "decode_tokens_per_s": round(1 / best_decode, 1), "threads": a.threads}))
