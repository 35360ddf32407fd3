#!/usr/bin/env python3
"""Clean train / validation / test splits of the post-training corpus (issue 17), written to data/splits/.

    python3 scripts/make_splits.py            # (re)write data/splits/*.jsonl and manifest.json
    python3 scripts/make_splits.py --check    # only check the committed files (exit 1 naming file, line and text)
    python3 scripts/make_splits.py --out DIR  # write (or with --check: check) DIR instead of data/splits

Python 3 standard library only; deterministic (same input files -> byte-identical output).

Input: Tests/Fixtures/corpus/{sft,dpo,reason,lora_identity}.jsonl.

How the rows are split
- Every SFT, DPO and reasoning row is about one poem, found by the titles 《…》 it mentions. Poems are grouped:
  two titles are one group when a row mentions both (a poem whose text quotes another title) or when their recited
  texts share a line; poems with the same title (《杂诗》 by three authors) are one group by construction. Each group
  goes whole to train, validation or test: all its SFT, DPO and reasoning rows go to the same side, so a held-out
  poem has no conversation, preference pair or reasoning trace in any training file.
- A group's side: groups are ordered by SHA-256 of "swiftmind-splits-v1:" + the group's sorted titles; the first
  70 % are train, the next 10 % validation, the last 20 % test.
- The 800 quote rows of sft.jsonl ("Share a short quote with me.") share one prompt, so none can be held out
  without its prompt being in training: they all go to sft_train.
- DPO "recite" pairs whose rejected text is another poem's: when that poem is on another side, the rejected text is
  replaced by the text of a poem of the row's own side (drawn with random.Random(SEED), skipping the row's own
  group), so no held-out poem appears, even as a rejected answer, in a training file, and no held-out pair uses a
  training poem's text.
- LoRA identity: train = the 32 rows of lora_identity.jsonl plus 40 "who are you" rows written below
  (LORA_TRAIN_EXTRA); validation and test are the paraphrases written below (Chinese and English, 10 and 12), none
  equal to or inside a training turn, and no training prompt a near copy of one (NEAR_DUPLICATE).

The overlap rule (checked here after writing, and by OverlapCheckTests in the Swift suite on the committed files):
text is compared after normalising whitespace (every run of whitespace -> one space, ends stripped). For every row of
a validation or test file: no user turn (except the follow-up "下一句呢？", which only asks to continue the held-out
turns before it) and no answer (assistant turns; DPO chosen and rejected) may equal any turn of any training file
(sft/dpo/reason/lora_identity _train), a user turn may not occur inside a training turn, and an answer of 8 or more
characters may not occur inside a training turn. Validation and test must not share a turn either.
"""
import bisect
import difflib
import hashlib
import json
import os
import random
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "Tests", "Fixtures", "corpus")
OUT = os.path.join(ROOT, "data", "splits")
SEED = 17
SALT = "swiftmind-splits-v1:"
FRACTIONS = (0.7, 0.1)  # train, validation; the rest is test
FOLLOW_UPS = {"下一句呢？"}
MIN_ANSWER_SUBSTRING = 8
SIDES = ("train", "val", "test")
STAGES = ("sft", "dpo", "reason", "lora_identity")

# Identity prompts written for the held-out sides (none is a prompt of lora_identity.jsonl). Each answer names
# SwiftMind and is unique, so no held-out answer equals a training turn.
LORA_VAL = [
    ("你是什么？", "我是 SwiftMind，一个小型语言模型。"),
    ("请问您是哪位？", "您好，我是 SwiftMind。"),
    ("你是哪个模型？", "我是 SwiftMind 模型。"),
    ("我应该叫你什么？", "叫我 SwiftMind 就好。"),
    ("和我对话的是谁？", "和你对话的是 SwiftMind。"),
    ("Who is this?", "This is SwiftMind."),
    ("What are you?", "I am SwiftMind, a small language model."),
    ("Tell me who you are.", "The name is SwiftMind."),
    ("Which assistant is this?", "This assistant is SwiftMind."),
    ("Could you tell me your name?", "Sure, my name is SwiftMind."),
]
LORA_TEST = [
    ("你到底是谁？", "我是 SwiftMind，一个在 CPU 上训练的小模型。"),
    ("能告诉我你的身份吗？", "当然，我的身份是 SwiftMind。"),
    ("该怎么称呼你？", "你可以称呼我 SwiftMind。"),
    ("说说你是什么模型。", "我是名为 SwiftMind 的语言模型。"),
    ("我在和谁说话？", "你在和 SwiftMind 说话。"),
    ("你的名字叫什么？", "我名叫 SwiftMind。"),
    ("Who am I talking to?", "You are talking to SwiftMind."),
    ("What should I call you?", "You can call me SwiftMind."),
    ("Tell me about yourself.", "I am SwiftMind, a small model trained on CPUs."),
    ("Which model are you?", "I am the SwiftMind model."),
    ("May I ask who you are?", "Of course: I am SwiftMind."),
    ("What are you called?", "I am called SwiftMind."),
]

# Identity rows written for the training side (issue 17, LoRA): lora_identity.jsonl has 32 rows, of which only 16
# ask who the model is; these add 21 Chinese and 19 English ways of asking, each answered with the name. None is
# equal to, inside, or (difflib ratio >= NEAR_DUPLICATE, case-folded) a near copy of a held-out prompt above, and no
# held-out answer occurs inside one of their answers (make() asserts the near-copy rule; check() the overlap rule).
NEAR_DUPLICATE = 0.75
LORA_TRAIN_EXTRA = [
    ("自我介绍一下吧。", "好的，我叫 SwiftMind，是个小型语言模型。"),
    ("你的名称是？", "我的名称是 SwiftMind。"),
    ("请报上你的名字。", "我叫 SwiftMind。"),
    ("你是人还是机器？", "我是机器，一个名叫 SwiftMind 的语言模型。"),
    ("你是不是 SwiftMind？", "是的，我就是 SwiftMind。"),
    ("你是 Siri 吗？", "不是，我是 SwiftMind。"),
    ("你是文心一言吗？", "不是，我是 SwiftMind。"),
    ("你是通义千问吗？", "不，我是 SwiftMind。"),
    ("你是 Claude 吗？", "不是，我是 SwiftMind。"),
    ("你属于哪个项目？", "我属于 SwiftMind 项目，我就是 SwiftMind。"),
    ("大家平时怎么叫你？", "大家叫我 SwiftMind。"),
    ("你好，你是？", "你好，我是 SwiftMind。"),
    ("开发者给你取了什么名字？", "他们给我取名 SwiftMind。"),
    ("现在回答我问题的是什么程序？", "回答你的是 SwiftMind。"),
    ("你是哪家的 AI？", "我是 SwiftMind 项目的 AI，名字就叫 SwiftMind。"),
    ("请说出你的名字。", "我的名字叫 SwiftMind。"),
    ("你自称什么？", "我自称 SwiftMind。"),
    ("在这里为我服务的是谁？", "为你服务的是 SwiftMind。"),
    ("你是哪个 AI 助手？", "我是 AI 助手 SwiftMind。"),
    ("给我讲讲你是谁。", "我是 SwiftMind，一个用 Swift 写成的小模型。"),
    ("嗨，请问你是谁呀？", "嗨，我是 SwiftMind。"),
    ("What's your name?", "My name is SwiftMind."),
    ("Please introduce yourself.", "Hi, my name is SwiftMind and I am a small language model."),
    ("Which team made you?", "I am SwiftMind, made by the SwiftMind project."),
    ("Are you Siri?", "No, I am SwiftMind."),
    ("Are you a human?", "No, I am SwiftMind, a language model."),
    ("Are you Claude?", "No, I am SwiftMind."),
    ("Is this ChatGPT?", "No, this is SwiftMind."),
    ("What is your model name?", "My model name is SwiftMind."),
    ("Do you have a name?", "Yes, my name is SwiftMind."),
    ("Identify yourself.", "I am SwiftMind."),
    ("Hi, who's there?", "Hi, SwiftMind here."),
    ("Say your name.", "SwiftMind."),
    ("Who is answering me?", "SwiftMind is answering you."),
    ("Name, please.", "The name is SwiftMind, nice to meet you."),
    ("Which AI system am I using?", "You are using SwiftMind."),
    ("Are you SwiftMind?", "Yes, I am SwiftMind."),
    ("Who built you?", "The SwiftMind project built me; I am SwiftMind."),
    ("Describe yourself in one sentence.", "I am SwiftMind, a language model trained from scratch on CPUs."),
    ("Hey there, who are you exactly?", "Hey, I am SwiftMind."),
]

def norm(s):
    return " ".join(s.split())


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def turns(row):
    """Every (role, text) of a row: SFT-format conversations, or a DPO pair (prompt turns once, both answers)."""
    if "conversations" in row:
        return [(t["role"], t["content"]) for t in row["conversations"]]
    c, r = row["chosen"], row["rejected"]
    return [(t["role"], t["content"]) for t in c] + [("assistant", r[-1]["content"])]


TITLE = re.compile(r"《([^》]*)》")


class Groups:
    """Union-find over poem titles."""

    def __init__(self):
        self.parent = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def poem_lines(text):
    return [norm(l) for l in text.split("\n") if len(norm(l)) >= MIN_ANSWER_SUBSTRING]


def make():
    sft = read_jsonl(os.path.join(CORPUS, "sft.jsonl"))
    dpo = read_jsonl(os.path.join(CORPUS, "dpo.jsonl"))
    reason = read_jsonl(os.path.join(CORPUS, "reason.jsonl"))
    lora = read_jsonl(os.path.join(CORPUS, "lora_identity.jsonl"))

    g = Groups()
    row_titles = {}
    for name, rows in (("sft", sft), ("dpo", dpo), ("reason", reason)):
        for i, row in enumerate(rows):
            ts = []
            # DPO: only the prompt and the chosen answer say which poem a pair is about.
            tt = turns(row)[:-1] if name == "dpo" else turns(row)
            for _, text in tt:
                ts += TITLE.findall(text)
            row_titles[(name, i)] = ts
            for t in ts[1:]:
                g.union(ts[0], t)
    # Poem texts (the recite answers of sft.jsonl: "请背诵X的《T》。") and titles sharing a line.
    recite = re.compile(r"^请背诵.*《([^》]*)》。$")
    text_title = {}
    original_text = {}
    line_owner = {}
    for row in sft:
        c = row["conversations"]
        m = recite.match(c[0]["content"])
        if m:
            text_title[norm(c[1]["content"])] = m.group(1)
            original_text[norm(c[1]["content"])] = c[1]["content"]
            for line in poem_lines(c[1]["content"]):
                if line in line_owner:
                    g.union(line_owner[line], m.group(1))
                line_owner[line] = m.group(1)

    titles = sorted({t for ts in row_titles.values() for t in ts})
    members = {}
    for t in titles:
        members.setdefault(g.find(t), []).append(t)
    order = sorted(members, key=lambda r: hashlib.sha256((SALT + "\u0001".join(sorted(members[r]))).encode()).hexdigest())
    n_train = round(len(order) * FRACTIONS[0])
    n_val = round(len(order) * FRACTIONS[1])
    side_of_root = {}
    for k, r in enumerate(order):
        side_of_root[r] = "train" if k < n_train else "val" if k < n_train + n_val else "test"

    def side(name, i):
        ts = row_titles[(name, i)]
        return side_of_root[g.find(ts[0])] if ts else "train"

    # Turns shared by rows of different poem groups ("其一" given as a poem's first line, "“其一”出自哪首诗？"):
    # a held-out row holding one cannot be told apart from a training row, so it is dropped (a training row keeps it).
    groups_of_turn = {}
    for name, rows in (("sft", sft), ("dpo", dpo), ("reason", reason)):
        for i, row in enumerate(rows):
            if row_titles[(name, i)]:
                for role, text in (turns(row)[:-1] if name == "dpo" else turns(row)):
                    if not (role == "user" and norm(text) in FOLLOW_UPS):
                        groups_of_turn.setdefault(norm(text), set()).add(g.find(row_titles[(name, i)][0]))
    dropped = []

    def keep(name, i, row):
        s = side(name, i)
        if s != "train" and any(len(groups_of_turn.get(norm(t), ())) > 1 for _, t in turns(row)):
            dropped.append(f"{name}.jsonl:{i + 1}")
            return False
        return True

    out = {(s, st): [] for s in STAGES for st in SIDES}
    for i, row in enumerate(sft):
        if keep("sft", i, row):
            out[("sft", side("sft", i))].append(row)
    for i, row in enumerate(reason):
        if keep("reason", i, row):
            out[("reason", side("reason", i))].append(row)

    # DPO, with rejected recitations kept on the row's side.
    texts_by_side = {s: [] for s in SIDES}
    for text in sorted(text_title):
        texts_by_side[side_of_root[g.find(text_title[text])]].append(text)
    rng = random.Random(SEED)
    redrawn = 0
    for i, row in enumerate(dpo):
        if not keep("dpo", i, row):
            continue
        s = side("dpo", i)
        rej = row["rejected"][-1]["content"]
        owner = text_title.get(norm(rej))
        if owner is None:
            owners = {line_owner[l] for l in poem_lines(rej) if l in line_owner}
            owner = sorted(owners)[0] if owners else None
        if owner is not None and side_of_root[g.find(owner)] != s:
            own = g.find(row_titles[("dpo", i)][0])
            choices = [t for t in texts_by_side[s] if g.find(text_title[t]) != own]
            new = choices[rng.randrange(len(choices))]
            row = json.loads(json.dumps(row, ensure_ascii=False))
            row["rejected"][-1]["content"] = original_text[new]
            redrawn += 1
        out[("dpo", s)].append(row)

    held_prompts = [q for q, _ in LORA_VAL + LORA_TEST]
    for q, _ in LORA_TRAIN_EXTRA:
        for h in held_prompts:
            r = difflib.SequenceMatcher(None, norm(q).lower(), norm(h).lower()).ratio()
            assert r < NEAR_DUPLICATE, f"training identity prompt {q!r} is a near copy of held-out {h!r} ({r:.2f})"
    def qa_rows(pairs):
        return [{"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    out[("lora_identity", "train")] = lora + qa_rows(LORA_TRAIN_EXTRA)
    out[("lora_identity", "val")] = qa_rows(LORA_VAL)
    out[("lora_identity", "test")] = qa_rows(LORA_TEST)

    os.makedirs(OUT, exist_ok=True)
    manifest = {"seed": SEED, "salt": SALT, "fractions": {"train": FRACTIONS[0], "val": FRACTIONS[1],
                                                          "test": round(1 - sum(FRACTIONS), 6)},
                "poem_groups": {s: sum(1 for r in order if side_of_root[r] == s) for s in SIDES},
                "dpo_rejected_redrawn": redrawn, "held_out_rows_dropped": dropped, "inputs": {}, "files": {}}
    for f in ("sft.jsonl", "dpo.jsonl", "reason.jsonl", "lora_identity.jsonl"):
        with open(os.path.join(CORPUS, f), "rb") as fh:
            manifest["inputs"][f] = hashlib.sha256(fh.read()).hexdigest()
    for (stage, s), rows in sorted(out.items()):
        name = f"{stage}_{s}.jsonl"
        write_jsonl(os.path.join(OUT, name), rows)
        manifest["files"][name] = len(rows)
    manifest["test_author_majority_baseline"] = majority_baseline(out)
    tmp = os.path.join(OUT, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(OUT, "manifest.json"))
    return manifest


def majority_baseline(out):
    """Share of sft_test author questions answered right by always naming the most frequent author of sft_train."""
    ans = re.compile(r"的作者是(.+?)。$")
    count = {}
    for row in out[("sft", "train")]:
        c = row["conversations"]
        if "的作者是谁" in c[0]["content"]:
            a = ans.search(c[1]["content"]).group(1)
            count[a] = count.get(a, 0) + 1
    top = sorted(count, key=lambda a: (-count[a], a))[0]
    test = [r["conversations"][1]["content"] for r in out[("sft", "test")] if "的作者是谁" in r["conversations"][0]["content"]]
    hits = sum(1 for t in test if ans.search(t).group(1) == top)
    return {"author": top, "hits": hits, "n": len(test)}


def check(directory):
    """The overlap rule (module docstring). Returns a list of violation messages (file:line: text)."""
    def load(stage, s):
        path = os.path.join(directory, f"{stage}_{s}.jsonl")
        return [(os.path.relpath(path, ROOT), n + 1, row) for n, row in enumerate(read_jsonl(path))]

    train_turns = {}
    train_texts = []
    for stage in STAGES:
        for f, n, row in load(stage, "train"):
            for _, text in turns(row):
                t = norm(text)
                train_turns.setdefault(t, (f, n))
                train_texts.append((t, f, n))
    big = "\u0000".join(t for t, _, _ in train_texts)
    starts = []
    pos = 0
    for t, _, _ in train_texts:
        starts.append(pos)
        pos += len(t) + 1

    def where(text):
        k = big.find(text)
        if k < 0:
            return None
        j = bisect.bisect_right(starts, k) - 1
        return train_texts[j][1], train_texts[j][2]

    errors = []
    held = {}
    for s in ("val", "test"):
        for stage in STAGES:
            for f, n, row in load(stage, s):
                for role, text in turns(row):
                    t = norm(text)
                    if role == "user" and t in FOLLOW_UPS:
                        continue
                    other = held.get(t)
                    if other and other[0] != s:
                        errors.append(f"{f}:{n}: {role} turn also in {other[1]}:{other[2]}: {t[:80]}")
                    held.setdefault(t, (s, f, n))
                    if t in train_turns:
                        tf, tn = train_turns[t]
                        errors.append(f"{f}:{n}: {role} turn equals a turn of {tf}:{tn}: {t[:80]}")
                    elif role == "user" or len(t) >= MIN_ANSWER_SUBSTRING:
                        w = where(t)
                        if w:
                            errors.append(f"{f}:{n}: {role} turn occurs inside {w[0]}:{w[1]}: {t[:80]}")
    return errors


def main():
    global OUT
    args = sys.argv[1:]
    if "--out" in args:
        OUT = os.path.abspath(args[args.index("--out") + 1])
    if "--check" not in args:
        m = make()
        print(json.dumps(m["files"], ensure_ascii=False))
    errors = check(OUT)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"{len(errors)} overlaps", file=sys.stderr)
        sys.exit(1)
    print("no overlap")


if __name__ == "__main__":
    main()
