"""Loads Hugging Face directories exported by `trainer export --format hf` with transformers and compares logits.

usage: check_hf.py CASE [CASE ...]   where CASE = EXPORT_DIR:REFERENCE.safetensors
REFERENCE holds `input_ids` [B, T] (int32) and `logits` ([B, T, V], or [V] = logits of the last token of row 0).
Also checks the tokenizer files: AutoTokenizer loads them and the chat template renders MiniMind's ChatML prompt.
Prints one JSON line per case; exits 1 when a max |diff| exceeds 1e-4 (f32 exports).
"""
import json, sys
import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ok = True
for case in sys.argv[1:]:
    d, ref_path = case.rsplit(":", 1)
    ref = load_file(ref_path)
    ids = torch.tensor(ref["input_ids"].astype(np.int64))
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.numpy()
    want = ref["logits"]
    got = logits[0, -1] if want.ndim == 1 else logits
    diff = float(np.abs(got - want).max())
    tok = AutoTokenizer.from_pretrained(d)
    prompt = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    expected_prompt = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    res = {"dir": d, "architecture": model.config.architectures, "tied": model.config.tie_word_embeddings,
           "max_abs_logit_diff": diff, "chat_template_ok": prompt == expected_prompt,
           "eos": tok.eos_token, "bos": tok.bos_token}
    print(json.dumps(res, ensure_ascii=False))
    ok = ok and diff <= 1e-4 and prompt == expected_prompt
sys.exit(0 if ok else 1)
