#!/usr/bin/env python3
"""Does a pretrained base know who wrote the poems of a DPO split? (diagnostic for docs/POST_TRAINING.md)

For every author pair of the given DPO jsonl files ("《T》的作者是谁？" with a chosen and a rejected author), scores
both authors as continuations of the pretraining corpus's own layout "《T》\\n作者：" (how `pretrain.jsonl` states
authorship) with the model loaded by Hugging Face `transformers` (LlamaForCausalLM from the SwiftMind model directory),
and counts the pairs where the right author gets the higher summed log-probability. 50 % is chance; a base that
learnt the corpus's title→author facts scores well above it. Prints one JSON line per file.

  python3 scripts/knowledge_probe.py runs/post4/pretrain/final data/splits/dpo_val.jsonl [more.jsonl …]
"""
import json
import os
import re
import sys

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d = sys.argv[1]
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))

    def logprob(prefix, cont):
        a = tok(prefix, add_special_tokens=False).input_ids
        b = tok(prefix + cont, add_special_tokens=False).input_ids
        with torch.no_grad():
            lp = model(torch.tensor([b])).logits.log_softmax(-1)[0]
        return sum(lp[i - 1, b[i]].item() for i in range(len(a), len(b)))

    for path in sys.argv[2:]:
        n = hits = 0
        for line in open(path, encoding="utf-8"):
            p = json.loads(line)
            title = re.search(r"《(.+?)》", p["chosen"][0]["content"])
            good = re.search(r"作者是(.+?)。", p["chosen"][-1]["content"])
            bad = re.search(r"作者是(.+?)。", p["rejected"][-1]["content"])
            if not (title and good and bad):
                continue
            prefix = f"《{title.group(1)}》\n作者："
            n += 1
            hits += logprob(prefix, good.group(1)) > logprob(prefix, bad.group(1))
        print(json.dumps({"model": d, "data": path, "author_pairs": n, "right_author_preferred": hits,
                          "rate": hits / max(n, 1)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
