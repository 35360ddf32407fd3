#!/usr/bin/env bash
# Multi-host test on one machine: 3 network namespaces ("hosts") joined by a bridge, mpirun --hostfile across them
# through a plm_rsh_agent wrapper (instead of ssh), OpenMPI's TCP transport only, all traffic on the namespaces'
# private subnet. Run as root (CI does); skips with exit 0 when not root or network namespaces are not permitted.
#
#   scripts/multihost-test.sh                 build, then run the checks below across the namespaces
#   scripts/multihost-test.sh -- CMD ARGS...  run one command (e.g. a built binary) on 3 ranks across the namespaces
#
# Environment: SWIFTMIND_NETNS_HOSTS (2 or 3, default 3), SWIFTMIND_NETNS_SUBNET (first three octets of a /24,
# default 10.213.77), SWIFTMIND_NETNS_TIMEOUT (seconds per mpirun, default 300).
#
# Layout (everything is created fresh and removed on exit, whatever happens):
#   netns <P>-sw : bridge br0 + veth ends p1..pN            (a private "switch": the root namespace is untouched)
#   netns <P>-hI : lo + eth0 = <SUBNET>.1I/24, hostname <P>-hI in its own UTS namespace
#   <P> = swm<pid>; mpirun itself runs inside <P>-h1; the agent runs `ip netns exec <P>-hI` for address <SUBNET>.1I.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

skip() { echo "multihost-test: SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces (run as root, as CI does)"
command -v ip >/dev/null || skip "ip (iproute2) not installed"
command -v mpirun >/dev/null || { echo "multihost-test: mpirun not found (scripts/install-deps.sh)" >&2; exit 1; }

NHOSTS="${SWIFTMIND_NETNS_HOSTS:-3}"
case "$NHOSTS" in 2|3) ;; *) echo "multihost-test: SWIFTMIND_NETNS_HOSTS must be 2 or 3" >&2; exit 2 ;; esac
NET="${SWIFTMIND_NETNS_SUBNET:-10.213.77}"
TIMEOUT="${SWIFTMIND_NETNS_TIMEOUT:-300}"
P="swm$$"
SW="$P-sw"
TMP=""
CREATED=()

cleanup() {
  local rc=$?
  set +e
  for ns in "${CREATED[@]}"; do
    # Anything still running inside a namespace (a hung rank, an orted) is killed before the namespace goes.
    pids="$(ip netns pids "$ns" 2>/dev/null)"
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  done
  for ns in "${CREATED[@]}"; do ip netns del "$ns" 2>/dev/null; done   # deletes br0 and the veth pairs with them
  [ -n "$TMP" ] && rm -rf "$TMP"
  left="$(ip netns list 2>/dev/null | grep -c "^$P-" || true)"
  [ "$left" = 0 ] || echo "multihost-test: WARNING: $left namespace(s) $P-* could not be removed" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Probe: may we create namespaces here (containers without CAP_SYS_ADMIN / CAP_NET_ADMIN may not)?
if ! ip netns add "$SW" 2>/dev/null; then skip "'ip netns add' is not permitted here"; fi
CREATED+=("$SW")
if ! ip -n "$SW" link add br0 type bridge 2>/dev/null; then skip "cannot create a bridge inside a network namespace"; fi
ip -n "$SW" link set br0 up
ip -n "$SW" link set lo up

# The subnet must not be in use on this machine (the namespaces are isolated, but keep addresses unambiguous).
if ip -4 addr show | grep -q "inet $NET\."; then
  echo "multihost-test: subnet $NET.0/24 is already used here; set SWIFTMIND_NETNS_SUBNET" >&2; exit 1
fi

HOSTS=()
for i in $(seq 1 "$NHOSTS"); do
  ns="$P-h$i"; addr="$NET.1$i"
  ip netns add "$ns"; CREATED+=("$ns")
  ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$SW"
  ip -n "$SW" link set "p$i" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  HOSTS+=("$addr")
done

TMP="$(mktemp -d /tmp/swiftmind-multihost.XXXXXX)"
HOSTFILE="$TMP/hostfile"
for a in "${HOSTS[@]}"; do echo "$a slots=1"; done > "$HOSTFILE"

# Runs a command "on host" $1 (an address of the subnet): inside that host's network namespace and, when unshare is
# available, its own UTS namespace with its own hostname (so MPI sees distinct processor names).
cat > "$TMP/in-host.sh" <<AGENT
#!/usr/bin/env bash
addr="\$1"; shift
case "\$addr" in
$(for i in $(seq 1 "$NHOSTS"); do echo "  $NET.1$i) ns=$P-h$i ;;"; done)
  *) echo "in-host: unknown host \$addr" >&2; exit 255 ;;
esac
if command -v unshare >/dev/null; then
  exec ip netns exec "\$ns" unshare --uts /bin/sh -c "hostname \$ns; exec \$*"
fi
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
# The plm_rsh_agent: mpirun calls it like ssh, `agent [ssh options] HOST REMOTE-COMMAND...`.
cat > "$TMP/agent.sh" <<AGENT
#!/usr/bin/env bash
while [ \$# -gt 0 ]; do case "\$1" in -x|-T|-n|-q) shift ;; -o|-p|-l) shift 2 ;; *) break ;; esac; done
exec "$TMP/in-host.sh" "\$@"
AGENT
chmod +x "$TMP/in-host.sh" "$TMP/agent.sh"

echo "multihost-test: ${#HOSTS[@]} namespaces ${HOSTS[*]} on bridge $SW/br0, subnet $NET.0/24"

# mh_mpirun NP CMD ARGS... : mpirun started on the first host, ranks spread over the hosts (one slot each, so
# NP > hosts wraps with --oversubscribe), TCP only, out-of-band and data traffic restricted to the subnet.
# Runs in the background and waits, so that a signal to this script runs the cleanup at once.
mh_mpirun() {
  local np="$1"; shift
  . scripts/env.sh
  timeout --kill-after=10 "$TIMEOUT" "$TMP/in-host.sh" "${HOSTS[0]}" \
    mpirun --hostfile "$HOSTFILE" -np "$np" --oversubscribe --bind-to none \
      --mca plm_rsh_agent "$TMP/agent.sh" \
      --mca btl tcp,self --mca btl_tcp_if_include "$NET.0/24" --mca oob_tcp_if_include "$NET.0/24" \
      --mca pml ob1 \
      -x OPENBLAS_NUM_THREADS=1 -x OPENBLAS_CORETYPE -x PATH \
      $(printf '%q ' "$@") &
  wait $!
}

# mh_capture NP CMD ARGS... : like mh_mpirun, with stdout+stderr shown and kept in $MH_OUT; returns mpirun's status.
MH_OUT=""
mh_capture() {
  local rc=0
  mh_mpirun "$@" > "$TMP/mh.out" 2>&1 || rc=$?
  MH_OUT="$(grep -v 'setpgid' "$TMP/mh.out" || true)"
  printf '%s\n' "$MH_OUT"
  return $rc
}

if [ "${1:-}" = "--" ]; then
  shift
  mh_mpirun "${#HOSTS[@]}" "$@"
  exit $?
fi

# ---- the checks ---------------------------------------------------------------------------------------------------
swift build --product mpi-selftest >&2
BIN="$(swift build --show-bin-path)"
N="${#HOSTS[@]}"

echo "== 1. every rank on its own host, MPI over TCP"
mh_capture "$N" "$BIN/mpi-selftest" info; out="$MH_OUT"
for i in $(seq 1 "$N"); do
  echo "$out" | grep -q "on $P-h$i," || { echo "multihost-test: FAIL: no rank ran on host $P-h$i" >&2; exit 1; }
done
echo "$out" | grep -q "info: sum of ranks = $((N * (N - 1) / 2)) " || { echo "multihost-test: FAIL: wrong all-reduce" >&2; exit 1; }

echo "== 2. bucketed all-reduce == plain all-reduce, bit for bit, across the hosts"
mh_capture "$N" "$BIN/mpi-selftest" allreduce --quick || true; out="$MH_OUT"
echo "$out" | grep -q "allreduce: OK ($N ranks)" || { echo "multihost-test: FAIL: bucketed all-reduce" >&2; exit 1; }
# The data went over the bridge: each host's eth0 carried (at least) its share of the 100 MB all-reduces.
for i in $(seq 1 "$N"); do
  tx="$(ip netns exec "$P-h$i" cat /sys/class/net/eth0/statistics/tx_bytes)"
  lo="$(ip netns exec "$P-h$i" cat /sys/class/net/lo/statistics/tx_bytes)"
  echo "host $P-h$i: eth0 sent $((tx / 1000000)) MB, lo sent $((lo / 1000000)) MB"
  [ "$tx" -gt 100000000 ] || { echo "multihost-test: FAIL: host $i sent only $tx bytes on eth0" >&2; exit 1; }
done

echo "== 3. a failing rank brings all hosts down"
rc=0
mh_mpirun "$N" "$BIN/mpi-selftest" fail --rank $((N - 1)) --message "multihost injected failure" > "$TMP/fail.out" 2>&1 || rc=$?
out="$(cat "$TMP/fail.out")"
echo "$out" | grep "SwiftMind rank" || true
if [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 137 ] || ! echo "$out" | grep -q "multihost injected failure"; then
  echo "multihost-test: FAIL: rank failure not propagated (exit $rc)" >&2; exit 1
fi

echo "== 4. pretraining across the hosts gives the losses of the same run on one host"
swift build --product trainer >&2
FIXTURES="$ROOT/Tests/Fixtures"   # the repository's corpus and tokenizer (Tests/Fixtures/README.md)
head -n 300 "$FIXTURES/corpus/pretrain.jsonl" > "$TMP/train.jsonl"
PRE=(pretrain --data-path "$TMP/train.jsonl" --tokenizer "$FIXTURES/tokenizers/minimind" --cache-dir "$TMP/cache"
     --hidden-size 32 --num-hidden-layers 2 --max-seq-len 33 --batch-size 2 --accumulation-steps 1
     --max-steps 8 --log-interval 1 --save-interval 100 --threads 1 --seed 3)
mh_capture "$N" "$BIN/trainer" "${PRE[@]}" --out-dir "$TMP/mh" >/dev/null || { printf '%s\n' "$MH_OUT" >&2; echo "multihost-test: FAIL: pretrain across hosts" >&2; exit 1; }
( . scripts/env.sh; mpirun -np "$N" --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS=1 \
    "$BIN/trainer" "${PRE[@]}" --out-dir "$TMP/local" > "$TMP/local.out" 2>&1 ) || { cat "$TMP/local.out" >&2; echo "multihost-test: FAIL: local pretrain" >&2; exit 1; }
python3 - "$TMP/mh/metrics.jsonl" "$TMP/local/metrics.jsonl" <<'PY' || { echo "multihost-test: FAIL: losses differ" >&2; exit 1; }
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
d = max(abs(x - y) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
print(f"{len(a)} steps across hosts vs one host: max |loss difference| {d:.3g}")
for x, y in zip(a, b): print(f"  {x:.6f}  {y:.6f}")
sys.exit(0 if len(a) == 8 and d <= 1e-6 else 1)
PY

echo "== 5. a stopped rank: the stall inspector names it and its host, and every process ends"
# The trainer processes running on host I (its network namespace).
trainers_on() { ip netns pids "$P-h$1" 2>/dev/null | xargs -r ps -o pid=,comm= -p 2>/dev/null | awk '$2 == "trainer" { print $1 }'; }
STALL=("${PRE[@]}" --max-steps 100000 --epochs 1000 --stall-warning 10 --stall-timeout 20 --out-dir "$TMP/stall")
mh_mpirun "$N" "$BIN/trainer" "${STALL[@]}" > "$TMP/stall.out" 2>&1 &
job=$!
for _ in $(seq 1 1200); do
  [ -f "$TMP/stall/metrics.jsonl" ] && [ "$(wc -l < "$TMP/stall/metrics.jsonl")" -ge 3 ] && break
  sleep 0.1
done
victim="$(trainers_on 2 | head -n 1)"
[ -n "$victim" ] || { cat "$TMP/stall.out" >&2; echo "multihost-test: FAIL: no trainer running on host $P-h2 after step 3" >&2; exit 1; }
kill -STOP "$victim"
t0=$(date +%s)
rc=0; wait "$job" || rc=$?
took=$(( $(date +%s) - t0 ))
sleep 2
left="$(for i in $(seq 1 "$N"); do trainers_on "$i"; done)"
[ -n "$left" ] && kill -9 $left 2>/dev/null
grep -E "stall: " "$TMP/stall.out" | head -n 3 || true
echo "rank 1 (host $P-h2, pid $victim) stopped: mpirun exited with $rc after $took s"
if [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 137 ] || [ "$took" -gt 60 ] || [ -n "$left" ] \
   || ! grep -q "rank 1 ($P-h2) last heard" "$TMP/stall.out"; then
  cat "$TMP/stall.out" >&2
  echo "multihost-test: FAIL: a stopped rank was not named and aborted within 60 s (exit $rc, ${took}s, left: ${left:-none})" >&2; exit 1
fi

echo "== 6. launch.sh --max-restarts 1: a host removed mid-run, the job finishes on the other two"
if [ "$N" != 3 ]; then
  echo "multihost-test: check 6 needs 3 hosts (SWIFTMIND_NETNS_HOSTS=3); skipped"
else
  # 3 ranks × batch 2 × accumulation 2 = global batch 12; on the 2 remaining hosts accumulation 3 keeps it.
  RS=(pretrain --data-path "$TMP/train.jsonl" --tokenizer "$FIXTURES/tokenizers/minimind" --cache-dir "$TMP/cache"
      --hidden-size 32 --num-hidden-layers 2 --max-seq-len 33 --batch-size 2 --accumulation-steps 2 --epochs 4
      --max-steps 60 --log-interval 1 --save-interval 5 --threads 1 --seed 3 --out-dir "$TMP/rs")
  t0=$SECONDS
  timeout --kill-after=10 "$TIMEOUT" "$TMP/in-host.sh" "${HOSTS[0]}" env SWIFTMIND_TRAINER_BIN="$BIN/trainer" \
    SWIFTMIND_HEALTH_TIMEOUT=20 "$ROOT/launch.sh" --hostfile "$HOSTFILE" -np 3 --max-restarts 1 \
      --mca plm_rsh_agent "$TMP/agent.sh" --mca hwloc_base_binding_policy none \
      --mca btl tcp,self --mca btl_tcp_if_include "$NET.0/24" --mca oob_tcp_if_include "$NET.0/24" --mca pml ob1 \
      -x PATH "${RS[@]}" > "$TMP/rs.out" 2>&1 &
  lpid=$!
  while [ ! -d "$TMP/rs/checkpoint-5" ] && kill -0 "$lpid" 2>/dev/null; do sleep 0.05; done
  [ -d "$TMP/rs/checkpoint-5" ] || { cat "$TMP/rs.out" >&2; echo "multihost-test: FAIL: no checkpoint-5" >&2; exit 1; }
  # The third host disappears: everything in its namespace is killed, then the namespace (and its veth) removed.
  pids="$(ip netns pids "$P-h3")"; [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  ip netns del "$P-h3"
  echo "host $P-h3 removed after $((SECONDS - t0)) s (checkpoint-5 written)"
  rc=0; wait "$lpid" || rc=$?
  grep -E '^launch.sh:|world [0-9]' "$TMP/rs.out" | cut -c1-240
  echo "launch.sh exit $rc after $((SECONDS - t0)) s; restarts.log:"; cat "$TMP/rs/restarts.log" 2>/dev/null || true
  [ "$rc" = 0 ] || { tail -n 40 "$TMP/rs.out" >&2; echo "multihost-test: FAIL: launch.sh --max-restarts exited $rc" >&2; exit 1; }
  grep -q "left out after a failed health check: $NET.13" "$TMP/rs/restarts.log" \
    || { echo "multihost-test: FAIL: restarts.log does not name the removed host" >&2; exit 1; }
  grep -q "relaunching with --resume on 2 rank(s), accumulation 3 (global batch 12)" "$TMP/rs/restarts.log" \
    || { echo "multihost-test: FAIL: the restart did not keep the global batch on 2 ranks" >&2; exit 1; }
  grep -q "world 2, .*resumed from .*checkpoint-" "$TMP/rs.out" \
    || { echo "multihost-test: FAIL: the second attempt did not resume on 2 ranks" >&2; exit 1; }
  [ -f "$TMP/rs/final/model.safetensors" ] || { echo "multihost-test: FAIL: no final model" >&2; exit 1; }
  python3 - "$TMP/rs/metrics.jsonl" <<'PY' || { echo "multihost-test: FAIL: metrics.jsonl steps" >&2; exit 1; }
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
print(f"metrics.jsonl: steps {steps[0]}..{steps[-1]}, {len(steps)} rows")
sys.exit(0 if steps == list(range(1, 61)) else 1)
PY
fi

echo "multihost-test: OK"
