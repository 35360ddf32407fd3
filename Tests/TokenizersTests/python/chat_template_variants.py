"""Variants of the chat templates SwiftMind recognises, rendered by Jinja as transformers renders chat templates.

usage: chat_template_variants.py TOKENIZER_CONFIG.json SEED COUNT
Takes the chat template of TOKENIZER_CONFIG.json (MiniMind's) and plain ChatML, and writes COUNT seeded variants
to stdout as JSON: [{"template", "renders": [{"messages", "add_generation_prompt", "text"}]}]. A variant changes
only whitespace and comments around and inside tags and the whitespace-control signs (`-`, `+`), so it may or may not
render like the original; the text is what jinja2 renders with transformers' settings (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks). Prints SKIP when jinja2 is missing.
"""
import json, random, re, sys
try:
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("SKIP"); sys.exit(0)

config, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
minimind = json.load(open(config))["chat_template"]
chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
conversations = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
     {"role": "user", "content": "q2"}],
]
tags = re.compile(r"(\{\{.*?\}\}|\{%.*?%\})", re.S)
rng = random.Random(seed)


def variant(t, mild):
    out = []
    for p in tags.split(t):
        if not (p.startswith("{{") or p.startswith("{%")):
            out.append(p)
            continue
        inner = p[2:-2]
        if rng.random() < 0.3:
            inner = re.sub(r" +", lambda m: rng.choice([" ", "  ", "\n "]), inner)
        signs = ["", "", "-"] if mild else ["", "", "-", "+"]
        out.append(p[:2] + rng.choice(signs) + inner + rng.choice(signs) + p[-2:])
        if mild:
            gap = ["", "\n", "\n    ", "{# c #}", "\n  {# c #}\n"] if p.startswith("{%") else ["", "{# c #}"]
        else:
            gap = ["", "", " ", "\n", "\n    ", "  \n", "\n\n", "\t", "{# c #}"]
        out.append(rng.choice(gap))
    s = "".join(out)
    if rng.random() < 0.3:
        s += rng.choice(["\n", "\n\n", " "])
    return s


result = []
for i in range(count):
    t = variant(rng.choice([minimind, chatml]), mild=i % 3 != 0)
    try:
        renders = [{"messages": c, "add_generation_prompt": g,
                    "text": env.from_string(t).render(messages=c, add_generation_prompt=g)}
                   for c in conversations for g in (False, True)]
    except Exception:
        continue
    result.append({"template": t, "renders": renders})
print(json.dumps(result))
