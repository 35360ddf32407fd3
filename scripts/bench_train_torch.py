"""Training speed of `trainer bench` beside PyTorch on the same model shape, interleaved: fp32 and bfloat16.

usage: python3 scripts/bench_train_torch.py [--trainer .build/release/trainer] [--rounds 2] [--steps 4] [--threads 2]
       [--batch-size 4] [--max-seq-len 512]
The PyTorch side is `transformers`' LlamaForCausalLM with MiniMind2-small's config (hidden 512, 8 layers, 8 heads,
2 KV heads, intermediate 1408, vocab 6400, tied embeddings, RoPE θ 1e6: the computation of MiniMind's own model),
AdamW, random tokens, `torch.set_num_threads(--threads)`; fp32, and `torch.autocast("cpu", dtype=torch.bfloat16)`
around forward and loss as MiniMind's `--dtype bfloat16` does. Ours: `trainer bench --dtype float32|bfloat16
--threads N --json` (one process; its engine line says whether bf16 runs on oneDNN or converted). Each engine × dtype
runs once per round in its own process, the order reversed every other round; tokens/s is over the timed steps after
one warm-up step, peak RSS is the process's. Prints the runs, the medians and the ratios ours / PyTorch.
Needs torch and transformers for the PyTorch side (skipped with a note when missing).
"""
import argparse, json, os, statistics, subprocess, sys

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
ap.add_argument("--trainer", default=".build/release/trainer", help="The trainer binary to time.")
ap.add_argument("--rounds", type=int, default=2, help="Rounds; each runs every engine × dtype once.")
ap.add_argument("--steps", type=int, default=4, help="Timed training steps per run (after one warm-up step).")
ap.add_argument("--threads", type=int, default=2, help="Threads of both engines.")
ap.add_argument("--batch-size", type=int, default=4)
ap.add_argument("--max-seq-len", type=int, default=512)
ap.add_argument("--torch-child", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)
a = ap.parse_args()

if a.torch_child:
    # One PyTorch run in this (child) process, so its peak RSS is its own.
    import resource, time
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=6400, rms_norm_eps=1e-5, rope_theta=1e6,
                      max_position_embeddings=32768, tie_word_embeddings=True, hidden_act="silu")
    model = LlamaForCausalLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    B, T = a.batch_size, a.max_seq_len
    def step():
        ids = torch.randint(0, 6400, (B, T))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.torch_child == "bfloat16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()                                                   # warm-up
    t0 = time.perf_counter()
    for _ in range(a.steps): step()
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens_per_s": a.steps * B * T / dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)

try:
    import torch, transformers  # noqa: F401
    have_torch = True
except ImportError:
    have_torch = False
    print("note: torch/transformers not installed: only SwiftMind is timed")

def ours(dtype):
    r = subprocess.run([a.trainer, "bench", "--dtype", dtype, "--threads", str(a.threads), "--steps", str(a.steps),
                        "--warmup", "1", "--batch-size", str(a.batch_size), "--max-seq-len", str(a.max_seq_len), "--json"],
                       check=True, capture_output=True, text=True)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return {"tokens_per_s": j["tokens_per_s"], "peak_rss_mb": j.get("peak_rss_mb"),
            "dtype_engine": j.get("dtype_engine")}

def pytorch(dtype):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-child", dtype, "--threads", str(a.threads),
                        "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--max-seq-len", str(a.max_seq_len)],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])

runs = [("swiftmind float32", lambda: ours("float32")), ("swiftmind bfloat16", lambda: ours("bfloat16"))]
if have_torch:
    runs += [("pytorch float32", lambda: pytorch("float32")), ("pytorch bfloat16", lambda: pytorch("bfloat16"))]
res = {n: [] for n, _ in runs}
for r in range(a.rounds):
    for n, f in (runs if r % 2 == 0 else runs[::-1]):
        res[n].append(f())
        res[n][-1]["load1"] = os.getloadavg()[0]
        print(json.dumps({"round": r, "engine": n, **res[n][-1]}), flush=True)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
med = {n: statistics.median(x["tokens_per_s"] for x in v) for n, v in res.items()}
print(f"\nCPU: {cpu}; native bf16: {', '.join(native) or 'none'}; {a.threads} threads; B {a.batch_size} × T {a.max_seq_len}; "
      f"median of {a.rounds} rounds of {a.steps} steps")
print("| engine, dtype | tokens/s | peak RSS MB |\n| --- | --- | --- |")
for n, v in res.items():
    print(f"| {n} | {med[n]:.0f} | {max((x.get('peak_rss_mb') or 0) for x in v):.0f} |")
if have_torch:
    for o, p in [("swiftmind bfloat16", "pytorch bfloat16"), ("swiftmind bfloat16", "pytorch float32"),
                 ("swiftmind float32", "pytorch float32")]:
        print(f"{o} / {p}: ×{med[o] / med[p]:.2f}")
worst = max(x["load1"] for v in res.values() for x in v)
if worst > a.threads + 1:
    print(f"WARNING: 1-minute load average reached {worst:.1f}: other processes shared the cores; rerun on a quiet machine.")
print(json.dumps({"cpu": cpu, "native_bf16": native, "median_tokens_per_s": med, "runs": res}))
