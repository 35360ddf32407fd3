#!/usr/bin/env python3
"""Pretraining mix with the poems up-weighted (issue 17: a base that knows the corpus's poems).

`pretrain.jsonl` holds 10015 documents, of which 400 are poems ("《T》\\n作者：A\\n…"); they are 2.5 % of its
characters, so a few epochs show each title→author fact only a few times and the 4.5 M-parameter base does not store
it (scripts/knowledge_probe.py stays at chance). Up-weighting a high-value source in the pretraining mixture is the
usual remedy (e.g. the mixture weights of The Pile, Gao et al. 2020, §3; Llama's epochs over Wikipedia/Books): this
writes every document once plus each poem document REPEAT more times, shuffled with a fixed seed, so the same inputs
give a byte-identical file. Only `pretrain.jsonl` is read: no SFT/DPO/reasoning row (and so no held-out question or
answer) enters pretraining; the poems themselves are there by design (data/splits/README.md).

  python3 scripts/make_pretrain_mix.py Tests/Fixtures/corpus/pretrain.jsonl OUT.jsonl --repeat 30
"""
import argparse
import json
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--repeat", type=int, default=30, help="extra copies of each poem document (default 30)")
    ap.add_argument("--seed", type=int, default=17)
    a = ap.parse_args()
    lines = [l.rstrip("\n") for l in open(a.src, encoding="utf-8") if l.strip()]
    poems = [l for l in lines if "\n作者：" in json.loads(l)["text"]]
    rows = lines + poems * a.repeat
    random.Random(a.seed).shuffle(rows)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    print(json.dumps({"documents": len(lines), "poems": len(poems), "repeat": a.repeat, "rows": len(rows),
                      "out": a.out}))


if __name__ == "__main__":
    main()
