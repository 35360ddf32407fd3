#!/usr/bin/env python3
"""Does a model copy the asked title? (issue 17, docs/POST_TRAINING.md run 7; needs torch + transformers)

    python3 scripts/copy_probe.py MODEL_DIR data/splits/sft_val.jsonl

For each author question "《T》的作者是谁？" of the file, the reference answer "《T》的作者是A。" is fed with MiniMind's chat
template (teacher forcing) and the title tokens of the answer are checked: is each the model's argmax? Prints how many
questions have every title token as argmax, at which title token the first miss falls (index 1 = the first token
after 《), and the mean per-token loss of the title. Run on validation splits only.
"""
import json, sys
import torch
from transformers import AutoTokenizer, LlamaForCausalLM
model_dir, data = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(model_dir)  # the model directory carries tokenizer.json and its chat template
m = LlamaForCausalLM.from_pretrained(model_dir).eval()
rows = [json.loads(l)["conversations"] for l in open(data) if "的作者是谁" in l]
top1 = 0; ranks = []; tit_nll = []; n = 0
for c in rows:
    q, a = c[0]["content"], c[1]["content"]
    prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    p_ids = tok(prompt)["input_ids"]; full = tok(prompt + a)["input_ids"]
    title = a[:a.index("》") + 1]
    t_ids = tok(prompt + title)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(m(torch.tensor([full])).logits[0], -1)
    # tokens of the copied title in the answer (positions len(p_ids) .. len(t_ids)-1)
    pos = list(range(len(p_ids), len(t_ids)))
    nll = [-lp[i - 1, full[i]].item() for i in pos]
    am = [lp[i - 1].argmax().item() == full[i] for i in pos]
    n += 1; top1 += all(am); tit_nll.append(sum(nll) / len(nll))
    first_wrong = next((k for k, ok in enumerate(am) if not ok), None)
    ranks.append(first_wrong)
print(f"{n} author questions; whole title copied greedily (teacher-forced argmax at every title token): {top1}")
print("first title token index that is not argmax:", {k: ranks.count(k) for k in set(ranks)})
print("mean per-token title NLL", sum(tit_nll) / n)
