#!/usr/bin/env python3
"""Pretraining mix with the poems up-weighted (issue 17: a base that knows the corpus's poems).

`pretrain.jsonl` holds 10015 documents, of which 400 are poems ("《T》\\n作者：A\\n…"); they are 2.5 % of its
characters, so a few epochs show each title→author fact only a few times and the 4.5 M-parameter base does not store
it (scripts/knowledge_probe.py stays at chance). Up-weighting a high-value source in the pretraining mixture is the
usual remedy (the mixture weights of The Pile, Gao et al. 2020, Table 1): this writes every document once plus each
poem document REPEAT more times, shuffled with a fixed seed, so the same inputs give a byte-identical file.

`--layouts N` (knowledge augmentation, Allen-Zhu & Li 2023, "Physics of Language Models 3.1": facts memorised in one
layout are not extractable by fine-tuning on questions unless pretraining states them in several): the extra copies
of a poem cycle through the first N of LAYOUTS — the same title, author and text in other words and orders. None of
them contains the wording of the SFT/DPO questions or answers ("…的作者是…", "请背诵…").

`--layout-list 0,6` (copying): the extra copies cycle through these layouts instead of the first N. Layout 6 is the
corpus's own layout after a line that states the title first, so the title is written twice in a row. A decoder answers
"《T》的作者是谁？" by first copying 《T》 from the question, which needs an induction circuit (Olsson et al. 2022, "In-context
Learning and Induction Heads"); the corpus has almost no repeated text to form one, and run 6's SFT model copied the
first title token of 7 of 40 validation questions (docs/POST_TRAINING.md, run 7).

`--chat FILE --chat-repeat K` (mixed training, same paper: pretraining on the facts *and* on questions about some
of them lets the model answer the same questions about the others, which fine-tuning after pretraining does not):
adds each conversation of FILE, rendered with MiniMind's chat template exactly as SFT renders it, K times. FILE must
be a training split (`data/splits/sft_train.jsonl`): its questions are about training poems only, so no validation
or test question or answer enters pretraining.

Without `--chat` only `pretrain.jsonl` is read: no SFT/DPO/reasoning row enters pretraining; the poems themselves
are there by design (data/splits/README.md).

  python3 scripts/make_pretrain_mix.py Tests/Fixtures/corpus/pretrain.jsonl OUT.jsonl --repeat 30 [--layouts 6]
      [--chat data/splits/sft_train.jsonl --chat-repeat 4]
"""
import argparse
import json
import random
import re

# Layouts 1…6, each taking (title, author, body); layout 0 is the corpus's own "《T》\n作者：A\nBODY", copied as is.
LAYOUTS = [
    None,
    lambda t, a, b: f"{a}《{t}》\n{b}",
    lambda t, a, b: f"{b}\n——{a}《{t}》",
    lambda t, a, b: f"{a}写过一首《{t}》：\n{b}",
    lambda t, a, b: f"《{t}》这首诗出自{a}之手。\n{b}",
    lambda t, a, b: f"下面是{a}的《{t}》。\n{b}",
    lambda t, a, b: f"题目：《{t}》\n《{t}》\n作者：{a}\n{b}",
]
DEFAULT_SYSTEM = "You are a helpful assistant"


def render_chat(turns):
    """MiniMind's chat template (tokenizer_config.json `chat_template`) without a generation prompt: a system turn
    (the first message's if it is one, else the default), then each user turn followed by the assistant header and
    each assistant turn closed by <|im_end|>."""
    system = turns[0]["content"] if turns and turns[0]["role"] == "system" else DEFAULT_SYSTEM
    out = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    for t in turns:
        if t["role"] == "user":
            out.append(f"<|im_start|>user\n{t['content']}<|im_end|>\n<|im_start|>assistant\n")
        elif t["role"] == "assistant":
            out.append(f"{t['content']}<|im_end|>\n")
    return "".join(out)


POEM = re.compile(r"^《([^》\n]+)》\n作者：([^\n]+)\n(.*)$", re.S)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--repeat", type=int, default=30, help="extra copies of each poem document (default 30)")
    ap.add_argument("--layouts", type=int, default=1, choices=range(1, len(LAYOUTS) + 1),
                    help=f"layouts the extra copies cycle through (1 = the corpus's own; up to {len(LAYOUTS)})")
    ap.add_argument("--layout-list", help="comma-separated layout numbers the extra copies cycle through (e.g. 0,6); "
                    "overrides --layouts")
    ap.add_argument("--chat", help="a training-split conversations jsonl to mix in, rendered with the chat template")
    ap.add_argument("--chat-repeat", type=int, default=1, help="copies of each --chat conversation (default 1)")
    ap.add_argument("--seed", type=int, default=17)
    a = ap.parse_args()
    lines = [l.rstrip("\n") for l in open(a.src, encoding="utf-8") if l.strip()]
    if not lines:
        raise SystemExit(f"{a.src}: no documents")
    poems = [(l, m.groups()) for l, m in ((l, POEM.match(json.loads(l)["text"])) for l in lines) if m]
    cycle = list(range(a.layouts))
    if a.layout_list:
        try:
            cycle = [int(x) for x in a.layout_list.split(",")]
        except ValueError:
            raise SystemExit(f"--layout-list {a.layout_list!r}: expected comma-separated integers")
        if not cycle or any(k < 0 or k >= len(LAYOUTS) for k in cycle):
            raise SystemExit(f"--layout-list {a.layout_list!r}: layouts are 0…{len(LAYOUTS) - 1}")
    # Layout 0 copies the document's own line (so --layouts 1 writes exactly the plain up-weighted mix).
    extra = [l if cycle[k % len(cycle)] == 0 else json.dumps({"text": LAYOUTS[cycle[k % len(cycle)]](*p)}, ensure_ascii=False)
             for k in range(a.repeat) for l, p in poems]
    chats = []
    if a.chat:
        if "_train" not in a.chat.rsplit("/", 1)[-1]:
            raise SystemExit(f"--chat {a.chat}: only a training split may enter pretraining")
        convs = [json.loads(l)["conversations"] for l in open(a.chat, encoding="utf-8") if l.strip()]
        chats = [json.dumps({"text": render_chat(c)}, ensure_ascii=False) for _ in range(a.chat_repeat) for c in convs]
    rows = lines + extra + chats
    random.Random(a.seed).shuffle(rows)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    print(json.dumps({"documents": len(lines), "poems": len(poems), "repeat": a.repeat, "layouts": cycle,
                      "chat": a.chat, "chat_rows": len(chats), "rows": len(rows), "out": a.out}))


if __name__ == "__main__":
    main()
