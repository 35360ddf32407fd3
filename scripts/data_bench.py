#!/usr/bin/env python3
"""Data benchmark: how SwiftMind's token caches behave at MiniMind's real dataset sizes.

Synthesizes MiniMind-format jsonl files of the requested sizes from the repository's own text (data/demo/pretrain.jsonl:
lines shuffled, cut and joined at random, so no two lines repeat), then for every (size, stage) runs the trainer twice
under mpirun and prints, per run:

  build_s        seconds from launch until the token cache's meta.json exists (first launch: the cache build)
  MB_s           jsonl megabytes (1e6 bytes) per build second
  first_step_s   seconds from launch until the first row of metrics.jsonl (second launch: cache reuse)
  rss_priv_MB    peak private resident memory (Private_Clean + Private_Dirty) of each rank
  rss_MB         peak resident memory (RSS, shared file pages included) of each rank
  cpu_s          CPU seconds of each rank at the moment the cache was complete (first launch)
  cache_MB       bytes of the cache directory
  base_priv_MB   the same model's peak private RSS on a 10-line file of the stage (the baseline the issue compares to)

Usage (release build; takes minutes per GB on 2 cores):
  python3 scripts/data_bench.py --sizes 100M,1.2G --stages sft,dpo,pretrain --np 2
  python3 scripts/data_bench.py --sizes 50M --stages sft --keep     # keep the synthesized files in --work

Standard library only. Memory is read from /proc/<pid>/smaps_rollup every 0.2 s.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}
    if s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def source_texts():
    texts = []
    with open(os.path.join(ROOT, "data/demo/pretrain.jsonl"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                texts.append(json.loads(line)["text"])
    return texts


class Synth:
    """Varied MiniMind-format rows from the demo corpus (about 1 KB each, like pretrain_hq / sft_mini_512)."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)
        self.texts = source_texts()
        self.n = 0

    def passage(self, target):
        out = []
        size = 0
        while size < target:
            t = self.rng.choice(self.texts)
            a = self.rng.randrange(0, max(1, len(t) // 2))
            piece = t[a:a + self.rng.randrange(20, 400)]
            out.append(piece)
            size += len(piece.encode("utf-8"))
        self.n += 1
        return "\n".join(out) + f" ({self.n})"

    def row(self, stage):
        r = self.rng
        if stage == "pretrain":
            return {"text": self.passage(r.randrange(300, 1800))}
        if stage in ("sft", "reason"):
            conv = []
            for _ in range(r.choice([1, 1, 1, 2, 3])):
                conv.append({"role": "user", "content": self.passage(r.randrange(20, 200))})
                ans = self.passage(r.randrange(100, 600))
                if stage == "reason":
                    ans = f"<think>\n{self.passage(r.randrange(50, 300))}\n</think>\n<answer>\n{ans}\n</answer>"
                conv.append({"role": "assistant", "content": ans})
            return {"conversations": conv}
        if stage == "dpo":
            q = self.passage(r.randrange(20, 200))
            return {"chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": self.passage(r.randrange(100, 400))}],
                    "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": self.passage(r.randrange(100, 400))}]}
        raise ValueError(stage)


def synthesize(path, stage, size, lines=None):
    if os.path.exists(path) and lines is None and os.path.getsize(path) >= size:
        return
    s = Synth(seed=hash((stage, size)) & 0xFFFF)
    tmp = path + ".tmp"
    written = 0
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while (lines is None and written < size) or (lines is not None and count < lines):
            line = json.dumps(s.row(stage), ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            count += 1
    os.replace(tmp, path)


def rank_pids(root_pid):
    """pid -> rank of every trainer process descended from root_pid."""
    children = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(p))
        except (OSError, ValueError):
            pass
    out = {}
    stack = [root_pid]
    while stack:
        p = stack.pop()
        for c in children.get(p, []):
            stack.append(c)
            try:
                with open(f"/proc/{c}/comm") as f:
                    if f.read().strip() != "trainer":
                        continue
                env = open(f"/proc/{c}/environ", "rb").read().split(b"\0")
                rank = 0
                for e in env:
                    if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                        rank = int(e.split(b"=", 1)[1])
                out[c] = rank
            except OSError:
                pass
    return out


def mem_of(pid):
    rss = priv = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, v = line.split(":", 1)
                kb = int(v.split()[0]) if v.split() and v.split()[0].isdigit() else 0
                if k == "Rss":
                    rss = kb
                elif k in ("Private_Clean", "Private_Dirty"):
                    priv += kb
    except (OSError, ValueError):
        pass
    return rss / 1024, priv / 1024


def cpu_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cache_dirs(cache_root):
    if not os.path.isdir(cache_root):
        return []
    return [os.path.join(cache_root, d) for d in os.listdir(cache_root)
            if os.path.exists(os.path.join(cache_root, d, "meta.json"))]


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(d) for f in fs)


def run(cmd, env, out_dir, cache_root, timeout):
    """Runs cmd; returns the measurements described in the module docstring."""
    shutil.rmtree(out_dir, ignore_errors=True)
    metrics = os.path.join(out_dir, "metrics.jsonl")
    had_cache = set(cache_dirs(cache_root))
    t0 = time.time()
    log = open(out_dir + ".log", "w")
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak = {}
    build_s = first_step_s = None
    cpu_at_build = {}
    while p.poll() is None:
        now = time.time() - t0
        if now > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            raise RuntimeError(f"timeout after {timeout}s: {' '.join(cmd)} (see {out_dir}.log)")
        pids = rank_pids(p.pid)
        for pid, rank in pids.items():
            rss, priv = mem_of(pid)
            r0, p0 = peak.get(rank, (0, 0))
            peak[rank] = (max(r0, rss), max(p0, priv))
        if build_s is None:
            new = set(cache_dirs(cache_root)) - had_cache
            if new:
                build_s = now
                cpu_at_build = {rank: cpu_of(pid) for pid, rank in pids.items()}
        if first_step_s is None and os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            first_step_s = now
        time.sleep(0.2)
    log.close()
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n" + open(out_dir + ".log").read()[-3000:])
    return {"wall_s": time.time() - t0, "build_s": build_s, "first_step_s": first_step_s, "peak": peak,
            "cpu_at_build": cpu_at_build}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50M", help="comma-separated jsonl sizes (K/M/G = 1e3/1e6/1e9 bytes)")
    ap.add_argument("--stages", default="pretrain,sft,dpo", help="comma-separated: pretrain, sft, reason, dpo")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--trainer", default=os.path.join(ROOT, ".build/release/trainer"))
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json or its directory (default: the repository's MiniMind tokenizer)")
    ap.add_argument("--work", default="/tmp/swiftmind-data-bench", help="synthesized files, caches and outputs")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--model", default="--hidden-size 64 --num-hidden-layers 2",
                    help="model options (the same for the baseline and the large file)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--keep", action="store_true", help="keep synthesized files and caches")
    ap.add_argument("--json", action="store_true", help="one JSON line per result instead of the table")
    a = ap.parse_args()

    tok = a.tokenizer
    if tok is None:
        for c in ("Tests/Fixtures/tokenizers/minimind",):
            if os.path.exists(os.path.join(ROOT, c, "tokenizer.json")):
                tok = os.path.join(ROOT, c)
                break
    if tok is None:
        sys.exit("data_bench: no tokenizer found; pass --tokenizer")
    if not os.access(a.trainer, os.X_OK):
        sys.exit(f"data_bench: {a.trainer} not found: swift build -c release")
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "OPENBLAS_CORETYPE" not in env:
        flags = open("/proc/cpuinfo").read()
        env["OPENBLAS_CORETYPE"] = "SkylakeX" if " avx512f" in flags else "Haswell"

    print(f"# {cpu_model()}, {os.cpu_count()} cores; trainer {a.trainer}; np {a.np}; tokenizer {tok}", flush=True)
    if not a.json:
        print(f"{'stage':8} {'jsonl_MB':>9} {'build_s':>8} {'MB_s':>6} {'cache_MB':>9} {'reuse_first_step_s':>19} "
              f"{'priv_MB/rank':>16} {'rss_MB/rank':>16} {'base_priv_MB':>13} {'cpu_s/rank@build':>17}", flush=True)
    init_dir = None
    for stage in a.stages.split(","):
        cmd_stage = {"pretrain": "pretrain", "sft": "sft", "reason": "reason", "dpo": "dpo"}[stage]
        for size_s in a.sizes.split(","):
            size = parse_size(size_s)
            data = os.path.join(a.work, f"{stage}-{size_s}.jsonl")
            synthesize(data, stage, size)
            small = os.path.join(a.work, f"{stage}-10lines.jsonl")
            synthesize(small, stage, 0, lines=10)
            cache_root = os.path.join(a.work, f"cache-{stage}-{size_s}")
            shutil.rmtree(cache_root, ignore_errors=True)
            base_cache = os.path.join(a.work, "cache-baseline")
            shutil.rmtree(base_cache, ignore_errors=True)

            def cmd(path, out, root, sub=cmd_stage, max_steps=a.steps):
                c = ["mpirun", "-np", str(a.np), "--oversubscribe", "--bind-to", "none",
                     "-x", "OPENBLAS_NUM_THREADS", "-x", "OPENBLAS_CORETYPE", a.trainer, sub,
                     "--data-path", path, "--tokenizer", tok, "--out-dir", out, "--max-seq-len", str(a.max_seq_len),
                     "--batch-size", str(a.batch_size), "--accumulation-steps", "1", "--max-steps", str(max_steps),
                     "--log-interval", "1", "--save-interval", "100000", "--cache-dir", root] + a.model.split()
                if sub == "dpo":
                    c += ["--init", init_dir]
                return c

            if stage == "dpo" and init_dir is None:
                # DPO needs a policy to start from: one pretraining step of the same model on a 10-line file.
                pre = os.path.join(a.work, "pretrain-10lines.jsonl")
                synthesize(pre, "pretrain", 0, lines=10)
                init_dir = os.path.join(a.work, "out-init")
                run(cmd(pre, init_dir, base_cache, "pretrain", max_steps=1), env, init_dir, base_cache, a.timeout)
                init_dir += "/final"
                shutil.rmtree(base_cache, ignore_errors=True)
            base = run(cmd(small, os.path.join(a.work, "out-base"), base_cache), env,
                       os.path.join(a.work, "out-base"), base_cache, a.timeout)
            first = run(cmd(data, os.path.join(a.work, "out-1"), cache_root), env,
                        os.path.join(a.work, "out-1"), cache_root, a.timeout)
            second = run(cmd(data, os.path.join(a.work, "out-2"), cache_root), env,
                         os.path.join(a.work, "out-2"), cache_root, a.timeout)
            caches = cache_dirs(cache_root)
            cache_mb = sum(dir_bytes(c) for c in caches) / 1e6
            mb = os.path.getsize(data) / 1e6
            peak = {r: (max(first["peak"].get(r, (0, 0))[0], second["peak"].get(r, (0, 0))[0]),
                        max(first["peak"].get(r, (0, 0))[1], second["peak"].get(r, (0, 0))[1]))
                    for r in sorted(set(first["peak"]) | set(second["peak"]))}
            res = {"stage": stage, "jsonl_MB": round(mb, 1), "build_s": first["build_s"],
                   "MB_s": round(mb / first["build_s"], 1) if first["build_s"] else None,
                   "cache_MB": round(cache_mb, 1), "reuse_first_step_s": second["first_step_s"],
                   "priv_MB": {r: round(v[1]) for r, v in peak.items()},
                   "rss_MB": {r: round(v[0]) for r, v in peak.items()},
                   "base_priv_MB": {r: round(v[1]) for r, v in sorted(base["peak"].items())},
                   "cpu_s_at_build": {r: (round(v, 1) if v is not None else None)
                                      for r, v in sorted(first["cpu_at_build"].items())},
                   "np": a.np, "max_seq_len": a.max_seq_len, "cpu": cpu_model()}
            if a.json:
                print(json.dumps(res), flush=True)
            else:
                def per(d):
                    return "/".join(str(d[k]) for k in sorted(d))
                print(f"{stage:8} {mb:9.1f} {fmt(res['build_s']):>8} {fmt(res['MB_s']):>6} {cache_mb:9.1f} "
                      f"{fmt(res['reuse_first_step_s']):>19} {per(res['priv_MB']):>16} {per(res['rss_MB']):>16} "
                      f"{per(res['base_priv_MB']):>13} {per(res['cpu_s_at_build']):>17}", flush=True)
            if not a.keep:
                shutil.rmtree(cache_root, ignore_errors=True)
                os.remove(data)


def fmt(x):
    return "-" if x is None else f"{x:.1f}"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
