"""Decode/prefill speed of SwiftMind's --weight-dtype f32|bf16|q8_0 beside llama.cpp f32|f16|Q8_0, interleaved.

usage: python3 scripts/bench_quant_decode.py [--trainer .build/release/trainer] [--model DIR] [--rounds 5]
       [--prompt-tokens 128] [--new-tokens 256] [--threads 2] [--repeats 3] [--out DIR]
Without --model, writes MiniMind2-small-shaped random weights (hidden 512, 8 layers, 8 heads, 2 KV heads,
intermediate 1408, vocab 6400, N(0, 0.02) matrices, unit norms) as a Hugging Face Llama directory. Exports it with
`trainer export --format gguf --dtype f32|f16|q8_0` (the same weights for both engines), then runs every engine ×
dtype once per round, in turn (one `trainer bench-decode --json --repeats R` / one bench_decode_llama_cpp.py --repeats R
run each: best of R after a warm-up),
so load from other processes hits all of them alike. Prints per-run figures, the median of each over the rounds, and
our/llama.cpp ratios (decode: higher is better; prefill: llama.cpp ms / ours ms). Needs numpy and llama-cpp-python.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile
import numpy as np

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
ap.add_argument("--trainer", default=".build/release/trainer", help="The trainer binary to time.")
ap.add_argument("--model", help="A model directory (default: random MiniMind2-small-shaped weights written to OUT).")
ap.add_argument("--tokenizer", default="Tests/Fixtures/tokenizers/minimind", help="Tokenizer written into the GGUFs.")
ap.add_argument("--rounds", type=int, default=5, help="Rounds; each runs every engine × dtype once.")
ap.add_argument("--prompt-tokens", type=int, default=128, help="Random prompt length (prefill).")
ap.add_argument("--new-tokens", type=int, default=256, help="Greedy decode steps.")
ap.add_argument("--threads", type=int, default=2, help="Threads of both engines.")
ap.add_argument("--repeats", type=int, default=3,
                help="Timed runs inside each engine run after its warm-up (both engines report the best: a single "
                     "100 ms prefill is at the mercy of one scheduling hiccup).")
ap.add_argument("--out", help="Work directory (default: a temporary one). GGUFs there are reused only when they were "
                                "exported from the same model files (a .source file beside each records which).")
a = ap.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
work = a.out or tempfile.mkdtemp(prefix="bench-quant-")
os.makedirs(work, exist_ok=True)

model = a.model
if model is None and os.path.exists(os.path.join(work, "minimind2-small-random", "model.safetensors")):
    model = os.path.join(work, "minimind2-small-random")      # written by an earlier run (seeded: the same weights)
elif model is None:
    model = os.path.join(work, "minimind2-small-random")
    os.makedirs(model, exist_ok=True)
    C, L, H, KVH, I, V = 512, 8, 8, 2, 1408, 6400
    hd = C // H
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C, "intermediate_size": I,
           "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KVH, "vocab_size": V,
           "rms_norm_eps": 1e-5, "rope_theta": 1e6, "max_position_embeddings": 32768, "hidden_act": "silu",
           "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    json.dump(cfg, open(os.path.join(model, "config.json"), "w"), indent=1)
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": rng.normal(0, 0.02, (V, C)), "model.norm.weight": np.ones(C)}
    for l in range(L):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = np.ones(C); t[p + "post_attention_layernorm.weight"] = np.ones(C)
        for n, s in [("self_attn.q_proj", (H * hd, C)), ("self_attn.k_proj", (KVH * hd, C)), ("self_attn.v_proj", (KVH * hd, C)),
                     ("self_attn.o_proj", (C, H * hd)), ("mlp.gate_proj", (I, C)), ("mlp.up_proj", (I, C)), ("mlp.down_proj", (C, I))]:
            t[p + n + ".weight"] = rng.normal(0, 0.02, s)
    from safetensors.numpy import save_file
    save_file({k: v.astype(np.float32) for k, v in t.items()}, os.path.join(model, "model.safetensors"))

def model_signature(d):
    # Which weights a GGUF was exported from: the model directory's path and its files' sizes and modification times.
    files = sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json")))
    return json.dumps([os.path.abspath(d)] + [[f, os.path.getsize(os.path.join(d, f)), os.path.getmtime(os.path.join(d, f))] for f in files])

ggufs = {}
signature = model_signature(model)
for dt in ["f32", "f16", "q8_0"]:
    path = os.path.join(work, f"model-{dt}.gguf")
    source = path + ".source"
    fresh = os.path.exists(path) and os.path.exists(source) and open(source).read() == signature
    if not fresh:
        subprocess.run([a.trainer, "export", "--model", model, "--format", "gguf", "--dtype", dt, "--out", path,
                        "--tokenizer", a.tokenizer], check=True, stdout=subprocess.DEVNULL)
        open(source, "w").write(signature)
    ggufs[dt] = path

def ours(dt):
    r = subprocess.run([a.trainer, "bench-decode", "--model", model, "--weight-dtype", dt, "--json", "--repeats", str(a.repeats),
                        "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", str(a.new_tokens), "--threads", str(a.threads)],
                       check=True, capture_output=True, text=True)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return {"decode": j["decode_tokens_per_s"], "prefill": j["prefill_ms"], "over_floor": j.get("decode_over_floor"),
            "kernels": j.get("kernels")}

def llama(dt):
    r = subprocess.run([sys.executable, os.path.join(here, "bench_decode_llama_cpp.py"), ggufs[dt], "--repeats", str(a.repeats),
                        "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", str(a.new_tokens), "--threads", str(a.threads)],
                       check=True, capture_output=True, text=True)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return {"decode": j["decode_tokens_per_s"], "prefill": j["prefill_ms"]}

runs = [("swiftmind f32", lambda: ours("f32")), ("swiftmind bf16", lambda: ours("bf16")), ("swiftmind q8_0", lambda: ours("q8_0")),
        ("llama.cpp f32", lambda: llama("f32")), ("llama.cpp f16", lambda: llama("f16")), ("llama.cpp Q8_0", lambda: llama("q8_0"))]
def steal_seconds():
    # CPU time the hypervisor gave to other guests (the `steal` column of /proc/stat, in USER_HZ = 1/100 s): a run
    # with seconds of steal measured a machine that was not all ours.
    try:
        f = open("/proc/stat").readline().split()
        return int(f[8]) / 100
    except (OSError, IndexError, ValueError):
        return 0.0

res = {n: [] for n, _ in runs}
for r in range(a.rounds):
    for n, f in (runs if r % 2 == 0 else runs[::-1]):
        s0 = steal_seconds()
        res[n].append(f())
        res[n][-1]["steal_s"] = round(steal_seconds() - s0, 2)
        res[n][-1]["load1"] = os.getloadavg()[0]
        print(json.dumps({"round": r, "engine": n, **res[n][-1]}), flush=True)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
med = {n: {k: statistics.median(x[k] for x in v) for k in ("decode", "prefill")} for n, v in res.items()}
print(f"\nCPU: {cpu}; {a.threads} threads; prompt {a.prompt_tokens}, {a.new_tokens} new tokens; best of {a.repeats} per run, median of {a.rounds} rounds")
print("| engine, weights | decode tokens/s | prefill ms |\n| --- | --- | --- |")
for n in res: print(f"| {n} | {med[n]['decode']:.1f} | {med[n]['prefill']:.1f} |")
for o, l in [("swiftmind f32", "llama.cpp f32"), ("swiftmind bf16", "llama.cpp f16"), ("swiftmind q8_0", "llama.cpp Q8_0")]:
    # Also the median of the per-round ratios: the two runs of one round are minutes apart at most, so a slow spell of
    # the machine (steal) moves both less than it moves a median over rounds.
    rd = statistics.median(x["decode"] / y["decode"] for x, y in zip(res[o], res[l]))
    rp = statistics.median(y["prefill"] / x["prefill"] for x, y in zip(res[o], res[l]))
    print(f"{o} / {l}: decode ×{med[o]['decode'] / med[l]['decode']:.2f}, prefill ×{med[l]['prefill'] / med[o]['prefill']:.2f}"
          f" (medians; median of per-round ratios: decode ×{rd:.2f}, prefill ×{rp:.2f}; >1 = ours faster)")
print(f"steal during the runs: {sum(x['steal_s'] for v in res.values() for x in v):.1f} s in all; kernels: {res['swiftmind q8_0'][0].get('kernels')}")
# Other processes on the same cores are not steal: the 1-minute load average after each run says whether they were
# there (this script's own runs hold it near --threads). llama.cpp's spinning workers collapse far more than ours
# when the cores are oversubscribed, so such ratios flatter us.
worst = max(x["load1"] for v in res.values() for x in v)
if worst > a.threads + 1:
    print(f"WARNING: 1-minute load average reached {worst:.1f} with {a.threads} threads per run: other processes shared the "
          f"cores, so these figures (and above all the ratios) do not describe this machine; rerun on a quiet one.")
print(json.dumps({"cpu": cpu, "median": med, "runs": res}))
