"""Raw-text greedy continuation of exported models in transformers and in llama.cpp, for `RawTextBOSTests`.

usage: check_raw_text.py N HF_DIR FILE.gguf [HF_DIR FILE.gguf ...] -- TEXT [TEXT ...]
For each exported model (a Hugging Face directory and a GGUF of the same weights) and each TEXT: the ids
transformers' tokenizer(TEXT) gives (its add-special-tokens rule) and N greedy ids from the Hugging Face directory
(argmax of a full forward per step, no eos stop); the ids llama.cpp's tokenizer gives (add_special as the GGUF's
tokenizer.ggml.add_bos_token says, special tokens in the text parsed) and N greedy ids from the GGUF. Also
tokenizer_config.json's add_bos_token / add_eos_token and the GGUF's flags. Prints one JSON list, one object per
model in the order given (one process for all of them: the imports cost seconds); the caller compares it with
`trainer generate`.
"""
import json, sys
import torch
from gguf import GGUFReader
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from check_llama_cpp import greedy   # this directory (sys.path[0])

n = int(sys.argv[1])
sep = sys.argv.index("--")
paths, texts = sys.argv[2:sep], sys.argv[sep + 1:]
assert paths and len(paths) % 2 == 0 and texts, __doc__


def check(hf_dir, gguf_path):
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager").eval()
    llm = Llama(model_path=gguf_path, n_ctx=256, n_threads=2, verbose=False, logits_all=False)
    reader = GGUFReader(gguf_path)

    def gguf_flag(key):
        f = reader.fields.get(key)
        return None if f is None else bool(f.parts[f.data[0]][0])
    cfg = json.load(open(f"{hf_dir}/tokenizer_config.json"))
    out = {"config_add_bos_token": cfg.get("add_bos_token"), "config_add_eos_token": cfg.get("add_eos_token"),
           "gguf_add_bos_token": gguf_flag("tokenizer.ggml.add_bos_token"),
           "gguf_add_eos_token": gguf_flag("tokenizer.ggml.add_eos_token"), "texts": []}
    for text in texts:
        ids = tok(text)["input_ids"]
        seq = list(ids)
        with torch.no_grad():
            for _ in range(n):
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
                seq.append(int(torch.argmax(logits)))
        hf_new = seq[len(ids):]
        llama_ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        llama_new = greedy(llm, llama_ids, n)
        out["texts"].append({"text": text, "transformers_prompt": ids, "transformers_new": hf_new,
                             "llama_cpp_prompt": [int(x) for x in llama_ids], "llama_cpp_new": llama_new})
    return out


print(json.dumps([check(paths[i], paths[i + 1]) for i in range(0, len(paths), 2)]))
