#!/usr/bin/env python3
"""Prints the loss curves of two pretraining runs side by side from their metrics.jsonl (loss_window_mean per log
interval; for a MoE run also ce = loss - aux). Usage: scripts/moe_compare.py DENSE_OUT MOE_OUT"""
import json, sys

def read(d):
    rows = {}
    for line in open(d + "/metrics.jsonl"):
        r = json.loads(line)
        if "step" in r and "loss_window_mean" in r:
            rows[r["step"]] = r
    return rows

dense, moe = read(sys.argv[1]), read(sys.argv[2])
print("%6s %12s %12s %12s %10s" % ("step", "dense loss", "moe loss", "moe ce", "moe aux"))
for s in sorted(set(dense) & set(moe)):
    d, m = dense[s], moe[s]
    aux = m.get("aux_loss_window_mean", 0.0)
    print("%6d %12.4f %12.4f %12.4f %10.4f" % (s, d["loss_window_mean"], m["loss_window_mean"], m["loss_window_mean"] - aux, aux))
