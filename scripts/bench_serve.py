#!/usr/bin/env python3
"""Throughput of `trainer serve` with N concurrent streaming clients (loopback only, stdlib only).

usage: scripts/bench_serve.py [--port 8998] [--clients 8] [--max-tokens 128] [--api-key KEY]
Each client POSTs one streaming chat completion (temperature 0.85, seed = client index, include_usage) and reads the
SSE stream to [DONE]. Prints per-client time to first token and completion tokens, the aggregate completion tokens/s
over the wall time of the whole batch, and the /health latency measured while the batch runs.
"""
import argparse, http.client, json, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=8998)
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--max-tokens", type=int, default=128)
ap.add_argument("--api-key")
a = ap.parse_args()
headers = {"Content-Type": "application/json"}
if a.api_key: headers["Authorization"] = "Bearer " + a.api_key

results = [None] * a.clients
def client(i):
    body = json.dumps({"model": "m", "stream": True, "max_tokens": a.max_tokens, "temperature": 0.85, "seed": i,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": f"请背诵一首唐诗 ({i})"}]})
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
    t0 = time.time()
    c.request("POST", "/v1/chat/completions", body, headers)
    r = c.getresponse()
    assert r.status == 200, r.status
    first, usage, done, buf = None, None, False, b""
    while True:
        line = r.readline()
        if not line: break
        line = line.strip()
        if not line.startswith(b"data: "): continue
        payload = line[6:]
        if payload == b"[DONE]": done = True; break
        ev = json.loads(payload)
        if ev.get("usage"): usage = ev["usage"]
        elif ev["choices"] and ev["choices"][0]["delta"].get("content") and first is None: first = time.time() - t0
    results[i] = {"ttft_s": first, "total_s": time.time() - t0, "completion_tokens": usage and usage["completion_tokens"], "done": done}

health = []
stop = False
def prober():
    while not stop:
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
        t = time.time(); c.request("GET", "/health"); c.getresponse().read(); health.append(time.time() - t)
        time.sleep(0.05)

threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
hp = threading.Thread(target=prober)
t0 = time.time()
hp.start()
for t in threads: t.start()
for t in threads: t.join()
wall = time.time() - t0
stop = True; hp.join()
tokens = sum(r["completion_tokens"] or 0 for r in results)
for i, r in enumerate(results): print(f"client {i}: ttft {r['ttft_s']:.3f} s, total {r['total_s']:.2f} s, {r['completion_tokens']} tokens, [DONE] {r['done']}")
print(f"{a.clients} concurrent streams: {tokens} completion tokens in {wall:.2f} s = {tokens / wall:.1f} tokens/s aggregate")
print(f"/health during the batch: {len(health)} probes, max {max(health) * 1e3:.1f} ms, median {sorted(health)[len(health) // 2] * 1e3:.1f} ms")
