"""Greedy decoding of a GGUF export with llama-cpp-python (llama.cpp), compared by the caller with SwiftMind's.

usage: check_llama_cpp.py FILE.gguf N PROMPT_IDS [PROMPT_IDS ...]
PROMPT_IDS are comma-separated token ids. The model is loaded once; for each prompt (in order) prints the N greedy
ids (temperature 0 ≡ top-k 1, no eos stop) as a JSON array on its own line. `greedy` is also used by
check_raw_text.py.
"""
import json, sys


def greedy(llm, ids, n):
    """The n greedy ids llama.cpp appends to `ids` from a fresh context (`Llama.reset`: the next `eval` starts at
    position 0 and drops the cached keys/values from there on)."""
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        t = llm.sample(top_k=1, temp=0.0, repeat_penalty=1.0)
        out.append(int(t))
        llm.eval([t])
    return out


def main():
    from llama_cpp import Llama
    path, n, prompts = sys.argv[1], int(sys.argv[2]), [[int(x) for x in a.split(",")] for a in sys.argv[3:]]
    if not prompts:
        sys.exit(__doc__)
    llm = Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, logits_all=False)
    for ids in prompts:
        print(json.dumps(greedy(llm, ids, n)), flush=True)


if __name__ == "__main__":
    main()
