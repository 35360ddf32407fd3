"""Validates a GGUF file written by `trainer export --format gguf` with the `gguf` package's reader.

usage: check_gguf.py FILE.gguf SOURCE_DIR TOKENIZER.json DTYPE(f32|f16|bf16|q8_0)
Checks llama metadata against SOURCE_DIR/config.json, the tokenizer metadata against tokenizer.json (every token
string by id, token types, merges, bos/eos/pad, chat template), and every tensor: llama.cpp name, dims, type, and
data equal to the source weight (cast to DTYPE) after llama.cpp's q/k RoPE row permutation. bf16 and q8_0 tensors
must be byte for byte what the gguf package's own quantizer (gguf.quants.quantize) makes of the source weight, and
q8_0 dequantized (gguf.quants.dequantize) within half a block scale (d/2 = max|w|/254, plus d's fp16 rounding).
Prints a JSON summary; exits 1 on the first mismatch.
"""
import json, sys
import numpy as np
from gguf import GGUFReader, GGMLQuantizationType, quants
from safetensors.numpy import load_file

path, src, tokfile, dtype = sys.argv[1:5]
r = GGUFReader(path)
cfg = json.load(open(f"{src}/config.json"))
tj = json.load(open(tokfile))
errors = []
def field(k):
    f = r.fields.get(k)
    if f is None:
        errors.append(f"missing key {k}"); return None
    return f.contents()
def expect(k, v):
    got = field(k)
    if isinstance(v, float):
        if got is None or abs(got - v) > 1e-6 * max(1, abs(v)): errors.append(f"{k} = {got}, expected {v}")
    elif got != v: errors.append(f"{k} = {str(got)[:80]}, expected {str(v)[:80]}")

expect("general.architecture", "llama")
expect("llama.embedding_length", cfg["hidden_size"])
expect("llama.block_count", cfg["num_hidden_layers"])
expect("llama.feed_forward_length", cfg["intermediate_size"])
expect("llama.attention.head_count", cfg["num_attention_heads"])
expect("llama.attention.head_count_kv", cfg["num_key_value_heads"])
expect("llama.rope.dimension_count", cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
theta = cfg["rope_theta"] if "rope_theta" in cfg else cfg["rope_parameters"]["rope_theta"]
expect("llama.rope.freq_base", float(theta))
expect("llama.attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"]))
expect("llama.context_length", cfg["max_position_embeddings"])
expect("tokenizer.ggml.model", "gpt2")

V = cfg["vocab_size"]
vocab = {i: t for t, i in tj["model"]["vocab"].items()}
added = {a["id"]: a for a in tj.get("added_tokens", [])}
want_tokens, want_types = [], []
for i in range(V):
    if i in added: want_tokens.append(added[i]["content"]); want_types.append(3 if added[i]["special"] else 4)
    elif i in vocab: want_tokens.append(vocab[i]); want_types.append(1)
    else: want_tokens.append(f"[PAD{i}]"); want_types.append(5)
expect("tokenizer.ggml.tokens", want_tokens)
expect("tokenizer.ggml.token_type", want_types)
merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
expect("tokenizer.ggml.merges", merges)
tc = json.load(open(tokfile.replace("tokenizer.json", "tokenizer_config.json")))
expect("tokenizer.chat_template", tc["chat_template"])
expect("tokenizer.ggml.bos_token_id", 1); expect("tokenizer.ggml.eos_token_id", 2); expect("tokenizer.ggml.padding_token_id", 0)

w = load_file(f"{src}/model.safetensors")
H, KVH = cfg["num_attention_heads"], cfg["num_key_value_heads"]
def permute(x, n_head):   # llama.cpp convert_hf_to_gguf.py: HF rotate-half rows → interleaved pairs
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
sub = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
       "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
       "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
for l in range(cfg["num_hidden_layers"]):
    for a, b in sub.items(): names[f"model.layers.{l}.{a}.weight"] = f"blk.{l}.{b}.weight"
tensors = {t.name: t for t in r.tensors}
checked = 0
for hf, x in w.items():
    if hf == "lm_head.weight" and cfg.get("tie_word_embeddings", True): continue
    g = tensors.get(names[hf])
    if g is None: errors.append(f"tensor {names[hf]} missing"); continue
    ref = x.astype(np.float32)
    if hf.endswith("q_proj.weight"): ref = permute(ref, H)
    if hf.endswith("k_proj.weight"): ref = permute(ref, KVH)
    want_type = "F32" if ref.ndim == 1 or dtype == "f32" else dtype.upper()
    if g.tensor_type.name != want_type: errors.append(f"{g.name}: type {g.tensor_type.name}, expected {want_type}")
    if list(g.shape) != list(reversed(ref.shape)): errors.append(f"{g.name}: dims {list(g.shape)}, expected {list(reversed(ref.shape))}")
    if want_type in ("BF16", "Q8_0"):
        qt = GGMLQuantizationType[want_type]
        raw = np.asarray(g.data).view(np.uint8).reshape(-1)
        want = quants.quantize(ref, qt).reshape(-1)
        if not np.array_equal(raw, want): errors.append(f"{g.name}: {want_type} bytes differ from gguf.quants.quantize ({int((raw != want).sum())} of {raw.size})")
        back = quants.dequantize(raw.reshape(ref.shape[0], -1), qt).reshape(ref.shape)
        blocks = np.abs(ref).reshape(-1, 32).max(axis=1) if want_type == "Q8_0" else None
        # q8_0: |w − d16·q| ≤ d/2 (rounding q) + 127·|d16 − d| with d16 = fp16(d): ≤ 127·d·2⁻¹¹ (normal) or 127·2⁻²⁵
        # (subnormal fp16). bf16: round to nearest even keeps 8 significant bits, |error| ≤ |w|·2⁻⁸.
        bound = (np.repeat(blocks / 127, 32).reshape(ref.shape) * (0.5 + 127 * 2.0 ** -11) + 127 * 2.0 ** -25) if want_type == "Q8_0" else np.abs(ref) * 2.0 ** -8
        if not (np.abs(back - ref) <= bound).all(): errors.append(f"{g.name}: dequantized {want_type} off by {np.abs(back - ref).max()}")
    else:
        data = np.asarray(g.data).reshape(ref.shape)
        cast = ref.astype(np.float16) if want_type == "F16" else ref
        if not np.array_equal(data, cast): errors.append(f"{g.name}: data differs (max {np.abs(data.astype(np.float32) - cast.astype(np.float32)).max()})")
    checked += 1
if len(tensors) != checked: errors.append(f"{len(tensors)} tensors in the file, {checked} expected")
print(json.dumps({"file": path, "tensors_checked": checked, "tokens": len(want_tokens), "merges": len(merges), "errors": errors[:10]}))
sys.exit(1 if errors else 0)
