"""transformers' answers for a model directory written by SwiftMind (HFConfigTests).

usage: llama_reference.py MODEL_DIR [MODEL_DIR …]
For each MODEL_DIR (holding ids.json), loads it with transformers (LlamaForCausalLM, fp32, eager attention) and writes OUT_JSON with the logits
[T, V] of one forward over MODEL_DIR/ids.json (a JSON list of ids) into MODEL_DIR/out.json, the rotary embedding's inverse frequencies and attention
scaling, and the directory's config as transformers saves it again (`save_pretrained` layout, e.g. rope_parameters).
Prints SKIP when torch or transformers is missing.
"""
import json, os, sys, tempfile
try:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
except ImportError:
    print("SKIP"); sys.exit(0)

for model_dir in sys.argv[1:]:
    ids = json.load(open(os.path.join(model_dir, "ids.json")))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    rotary = model.model.rotary_emb
    with tempfile.TemporaryDirectory() as d:
        AutoConfig.from_pretrained(model_dir).save_pretrained(d)
        resaved = json.load(open(os.path.join(d, "config.json")))
    json.dump({"logits": logits.tolist(), "inv_freq": rotary.inv_freq.tolist(),
               "attention_scaling": float(rotary.attention_scaling), "config": resaved},
              open(os.path.join(model_dir, "out.json"), "w"))
