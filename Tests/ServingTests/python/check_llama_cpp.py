"""Greedy decoding of a GGUF export with llama-cpp-python (llama.cpp), compared by the caller with SwiftMind's.

usage: check_llama_cpp.py FILE.gguf PROMPT_IDS(comma-separated) N
Prints the N greedy ids (temperature 0 ≡ top-k 1) as a JSON array; no eos stop.
"""
import json, sys
from llama_cpp import Llama

path, ids, n = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, logits_all=False)
llm.eval(ids)
out = []
for _ in range(n):
    t = llm.sample(top_k=1, temp=0.0, repeat_penalty=1.0)
    out.append(int(t))
    llm.eval([t])
print(json.dumps(out))
