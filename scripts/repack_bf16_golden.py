#!/usr/bin/env python3
"""Repacks ../shared/golden/bf16_step.safetensors into Tests/Fixtures/golden/bf16_step.safetensors, losslessly and
smaller (the fixtures' 50 MB budget): tensors whose every value is a bf16 number (low 16 bits zero; the logits of
autocast are bf16) are stored as BF16; a gradient whose values are bf16 numbers except in a few rows (embed_tokens:
the lm_head's bf16 gradient plus the fp32 embedding-lookup gradient of the batch's token rows) is stored as BF16 (its
exact rows' upper halves) plus `<name>.fp32_rows` (I32 row indices) and `<name>.fp32_values` (F32 [rows, C], exact).
The batch (input_ids, labels, loss_mask) is dropped: it is model/train_step's batch. Every value the test reads is
bit-identical to the source; the script checks it. Usage: repack_bf16_golden.py SRC DST (needs numpy, safetensors)."""
import sys
import numpy as np
from safetensors.numpy import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
d = load_file(src)
out = {}
for k, v in d.items():
    if k in ("input_ids", "labels", "loss_mask"):
        continue
    bits = v.view(np.uint32)
    exact = (bits & 0xFFFF) == 0
    hi = (bits >> 16).astype(np.uint16)
    if exact.all():
        out[k] = hi.view(np.uint16)
    elif v.ndim == 2 and (~exact.all(axis=1)).sum() * 8 < v.shape[0]:
        rows = np.nonzero(~exact.all(axis=1))[0].astype(np.int32)
        hi = hi.copy(); hi[rows] = 0
        out[k] = hi
        out[k + ".fp32_rows"] = rows
        out[k + ".fp32_values"] = v[rows].copy()
    else:
        out[k] = v
# numpy has no bfloat16: write uint16 arrays, then relabel those entries' dtype U16 -> BF16 in the header.
save_file(out, dst)
import json, struct
raw = open(dst, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
for k, e in hdr.items():
    if k != "__metadata__" and e["dtype"] == "U16":
        e["dtype"] = "BF16"
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])

# Check: the repacked file gives back every source tensor bit for bit.
back = {}
raw = open(dst, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; hdr = json.loads(raw[8:8 + n]); body = raw[8 + n:]
for k, e in hdr.items():
    if k == "__metadata__":
        continue
    a, b = e["data_offsets"]
    dt = {"BF16": np.uint16, "F32": np.float32, "I32": np.int32}[e["dtype"]]
    x = np.frombuffer(body[a:b], dtype=dt).reshape(e["shape"])
    if e["dtype"] == "BF16":
        x = (x.astype(np.uint32) << 16).view(np.float32)
    back[k] = x
for k, v in d.items():
    if k in ("input_ids", "labels", "loss_mask"):
        continue
    got = back[k].copy()
    if k + ".fp32_rows" in back:
        got[back[k + ".fp32_rows"]] = back[k + ".fp32_values"]
    assert got.shape == v.shape and (got.view(np.uint32) == v.view(np.uint32)).all(), k
print("ok:", dst, len(raw), "bytes")
