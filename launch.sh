#!/usr/bin/env bash
# SwiftMind launcher: builds the release `trainer` once, then runs it on N ranks with mpirun.
#
#   ./launch.sh demo [args]                       README command 1: runs scripts/demo.sh
#   ./launch.sh test                              README command 2: runs scripts/test.sh (whole test suite)
#   ./launch.sh [options] <trainer subcommand> [subcommand args...]
#
# options (before the subcommand):
#   -np N, -n N          number of ranks (default 1: runs the binary directly, no mpirun, single-process communicator)
#   --hostfile FILE      OpenMPI hostfile for several machines (see hostfiles/cluster.example); implies mpirun
#   --host LIST          comma-separated host[:slots] list, passed to mpirun
#   --mca KEY VALUE      extra OpenMPI MCA parameter (repeatable), e.g. --mca btl_tcp_if_include 10.0.0.0/24
#   -x VAR               export VAR to every rank (repeatable; OPENBLAS_*, SWIFTMIND_* are exported already)
#   --mpi                use mpirun even with -np 1
#   --debug              use the debug build instead of release
#   --no-build           do not run `swift build` (the binary must exist, e.g. on every host of a cluster)
#   --dry-run            print the command instead of running it
#   --max-restarts N     relaunch a failed training job up to N times with --resume (torchrun's name; default 0),
#                        only after a retryable exit code (RETRYABLE_EXIT_CODES in launch.sh), never when launch.sh
#                        itself was signalled; with --hostfile, hosts failing a health check are left out first and
#                        --accumulation-steps is scaled to keep the global batch; each attempt is logged to stderr
#                        and OUT/restarts.log (see hostfiles/README.md)
#
# Environment: scripts/env.sh is sourced (OpenBLAS kernel for the CPU, OpenMPI run-as-root variables when root).
# OPENBLAS_NUM_THREADS defaults to 1 per rank (ranks already use every core); set it to override.
# SWIFTMIND_TRAINER_BIN=PATH runs that trainer binary (no build). With --max-restarts: SWIFTMIND_RETRYABLE_EXIT_CODES
# (the exit codes that are retried; see RETRYABLE_EXIT_CODES) and SWIFTMIND_HEALTH_TIMEOUT (seconds per host
# health check, default 30).
# On several machines the repository (and the built binary) must be at the same path on every host.
#
# examples:
#   ./launch.sh -np 2 pretrain --data-path Tests/Fixtures/corpus/pretrain.jsonl --tokenizer Tests/Fixtures/tokenizers/minimind --max-steps 600
#   ./launch.sh --hostfile hostfiles/cluster.example -np 8 pretrain --batch-size 8
set -euo pipefail
# Exit codes of mpirun (or of the trainer alone) after which --max-restarts relaunches the job; edit this list, or set
# SWIFTMIND_RETRYABLE_EXIT_CODES (space-separated) to override it:
#   129 SIGHUP, 130 SIGINT, 137 SIGKILL (kill -9, the OOM killer), 143 SIGTERM: a rank ended from outside;
#   135 SIGBUS, 139 SIGSEGV: a rank crashed on a memory or file-system fault;
#   75 a rank was preempted (checkpoint written first), 76 the stall timeout ended a job that waited for a rank;
#   205 mpirun lost a host's daemon mid-run, 255 mpirun could not start its daemon on a host (ssh failed) — OpenMPI 4.1.
# Never retried: 1 (the trainer stopped with an error it names: bad data, a refused checkpoint, divergence — the same
# input fails again), 2 (launch.sh usage), 64 (trainer usage or validation), 132/133 (a Swift runtime trap: a bug
# that would repeat). A code here is retried at most --max-restarts times.
RETRYABLE_EXIT_CODES="${SWIFTMIND_RETRYABLE_EXIT_CODES:-75 76 129 130 135 137 139 143 205 255}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The working directory is kept: relative paths in trainer arguments and --hostfile mean what the user typed.

case "${1:-}" in
  demo)
    shift
    if [ -f "$ROOT/scripts/demo.sh" ]; then exec bash "$ROOT/scripts/demo.sh" "$@"; fi
    echo "launch.sh: scripts/demo.sh is not present in this checkout" >&2; exit 2 ;;
  test)
    shift; exec bash "$ROOT/scripts/test.sh" "$@" ;;
  ""|-h|--help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

np=1; use_mpi=0; config=release; build=1; dry=0; max_restarts=0; hostfile=""
mpi_args=(); mca_args=(); exports=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n|--np) np="$2"; shift 2 ;;
    --hostfile|-hostfile|--machinefile)
      [ -r "$2" ] || { echo "launch.sh: hostfile '$2' not readable" >&2; exit 2; }
      hostfile="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
      mpi_args+=(--hostfile "$hostfile"); use_mpi=1; shift 2 ;;
    --host|-H) mpi_args+=(--host "$2"); use_mpi=1; shift 2 ;;
    --mca) mpi_args+=(--mca "$2" "$3"); mca_args+=(--mca "$2" "$3"); shift 3 ;;
    -x) exports+=("$2"); shift 2 ;;
    --mpi) use_mpi=1; shift ;;
    --debug) config=debug; shift ;;
    --no-build) build=0; shift ;;
    --dry-run) dry=1; shift ;;
    --max-restarts)
      case "${2:-}" in ''|*[!0-9]*) echo "launch.sh: --max-restarts needs a non-negative integer, got '${2:-}'" >&2; exit 2 ;; esac
      max_restarts=$((10#$2)); shift 2 ;;
    --) shift; break ;;
    -*) echo "launch.sh: unknown option $1 (options go before the trainer subcommand; see ./launch.sh --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "launch.sh: missing trainer subcommand (e.g. pretrain); see ./launch.sh --help" >&2; exit 2; }
case "$np" in ''|*[!0-9]*|0) echo "launch.sh: -np needs a positive integer, got '$np'" >&2; exit 2 ;; esac
[ "$np" -gt 1 ] && use_mpi=1

# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
# shellcheck source=scripts/swift_build.sh
. "$ROOT/scripts/swift_build.sh"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

if [ -n "${SWIFTMIND_TRAINER_BIN:-}" ]; then
  bin="$SWIFTMIND_TRAINER_BIN"   # a given binary (the tests' build): no build, no SwiftPM call
else
  if [ "$build" = 1 ]; then
    swift_build --package-path "$ROOT" -c "$config" --product trainer >&2
  fi
  bin="$(swift build --package-path "$ROOT" -c "$config" --show-bin-path)/trainer"
fi
[ -x "$bin" ] || { echo "launch.sh: $bin not found (build it, or drop --no-build)" >&2; exit 2; }

if [ "$use_mpi" = 0 ]; then
  [ "$dry" = 1 ] && { echo "$bin $*"; exit 0; }
  [ "$max_restarts" = 0 ] && exec "$bin" "$@"
else
  command -v mpirun >/dev/null || { echo "launch.sh: mpirun not found; run scripts/install-deps.sh (openmpi-bin)" >&2; exit 2; }
  # Variables every rank needs, on every host (mpirun -x copies the launcher's value).
  for v in OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE $(compgen -e | grep -E '^SWIFTMIND_' || true); do
    [ -n "${!v+x}" ] && exports+=("$v")
  done
  xargs_=(); for v in "${exports[@]}"; do xargs_+=(-x "$v"); done
  local_only=1
  for a in "${mpi_args[@]}"; do case "$a" in --hostfile|--host) local_only=0 ;; esac; done
  extra=()
  # One machine: allow more ranks than OpenMPI counts cores (it counts physical cores, not hyperthreads).
  [ "$local_only" = 1 ] && extra+=(--oversubscribe)
  # Keep shared memory working in containers that forbid cross-process memory attach (CMA needs ptrace rights);
  # export OMPI_MCA_btl_vader_single_copy_mechanism=cma (or xpmem) to use single-copy transfers where allowed.
  [ -n "${OMPI_MCA_btl_vader_single_copy_mechanism:-}" ] || extra+=(--mca btl_vader_single_copy_mechanism none)
  cmd=(mpirun -np "$np" "${extra[@]}" "${mpi_args[@]}" "${xargs_[@]}" "$bin" "$@")
  [ "$dry" = 1 ] && { printf '%q ' "${cmd[@]}"; echo; exit 0; }
  # Training commands stay under launch.sh (below) even without restarts, so that a SIGTERM reaches the ranks as
  # SIGUSR1: mpirun answers SIGTERM itself by killing the ranks within ~2 s, before they can checkpoint.
  case "$1" in pretrain|sft|lora|dpo|reason|distill) ;; *) [ "$max_restarts" = 0 ] && exec "${cmd[@]}" ;; esac
fi

# ---- --max-restarts N: run, and relaunch with --resume after a retryable failure ----------------------------------
case "$1" in
  pretrain|sft|lora|dpo|reason|distill) ;;
  *) echo "launch.sh: --max-restarts applies to the training commands (pretrain, sft, lora, dpo, reason, distill), not '$1'" >&2; exit 2 ;;
esac
work="$(mktemp -d "${TMPDIR:-/tmp}/swiftmind-launch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The run's resolved options (each command's defaults included) from the trainer itself; a command line it refuses
# stops here with its message and exit code, before anything is launched.
rc=0; opts="$("$bin" "$@" --print-options 2>"$work/options.err")" || rc=$?
[ "$rc" = 0 ] || { grep -v '^\[openblas\]' "$work/options.err" >&2 || true; exit "$rc"; }
out_dir="$(printf '%s\n' "$opts" | sed -n 's/.*"outDir":"\([^"]*\)".*/\1/p' | sed 's#\\/#/#g')"
batch="$(printf '%s\n' "$opts" | sed -n 's/.*"batchSize":\([0-9]*\).*/\1/p')"
base_acc="$(printf '%s\n' "$opts" | sed -n 's/.*"accumulationSteps":\([0-9]*\).*/\1/p')"
case "$opts" in *'"resume":true'*) resumes=1 ;; *) resumes=0 ;; esac
[ -n "$out_dir" ] && [ -n "$batch" ] && [ -n "$base_acc" ] \
  || { echo "launch.sh: could not read --out-dir, --batch-size and --accumulation-steps from 'trainer $1 --print-options'" >&2; exit 2; }

# One line to stderr and to OUT/restarts.log (UTC time first).
log_event() {
  echo "launch.sh: $*" >&2
  { mkdir -p "$out_dir" && printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> "$out_dir/restarts.log"; } 2>/dev/null \
    || echo "launch.sh: warning: could not append to $out_dir/restarts.log" >&2
}

# The hostfile's hosts and slots (`host slots=N`, comments and blank lines skipped; no slots= counts as 1).
hf_hosts=(); hf_slots=(); hf_lines=()
if [ -n "$hostfile" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    l="${line%%#*}"; h=""; rest=""
    read -r h rest <<<"$l" || true
    [ -n "$h" ] || continue
    s=1; [[ " $rest" =~ [[:space:]]slots[[:space:]]*=[[:space:]]*([0-9]+) ]] && s=$((10#${BASH_REMATCH[1]}))
    hf_hosts+=("$h"); hf_slots+=("$s"); hf_lines+=("$l")
  done < "$hostfile"
fi
health_timeout="${SWIFTMIND_HEALTH_TIMEOUT:-30}"
# Every host of the hostfile at once: `mpirun -np 1 --host H test -x TRAINER` (through the same launch agent and
# MCA parameters as the job) within $health_timeout s. Sets `healthy` (indices) and `left_out` (host names).
health_check() {
  healthy=(); left_out=()
  local i pids=()
  for i in "${!hf_hosts[@]}"; do
    timeout -k 5 "$health_timeout" mpirun -np 1 --host "${hf_hosts[$i]}" "${mca_args[@]}" test -x "$bin" \
      </dev/null >"$work/health.$i" 2>&1 &
    pids+=($!)
  done
  for i in "${!hf_hosts[@]}"; do
    local hrc=0; wait "${pids[$i]}" || hrc=$?
    [ "$hrc" = 0 ] && { healthy+=("$i"); continue; }
    left_out+=("${hf_hosts[$i]}")
    local why; why="$(grep -v -e '^[[:space:]]*$' -e '^---' "$work/health.$i" | head -n 1)"
    [ "$hrc" = 124 ] || [ "$hrc" = 137 ] && why="no answer within ${health_timeout}s"
    echo "launch.sh: health check of ${hf_hosts[$i]} failed (exit $hrc): ${why:-no output}" >&2
  done
}

# A signal to launch.sh goes to the job (mpirun passes it on to the ranks) and ends the restarts: the scheduler or the
# user is stopping the run.
child=""; interrupted=""; sig_pending=0
# Under mpirun, SIGTERM, SIGINT and SIGHUP are passed on as SIGUSR1, which mpirun forwards to the ranks untouched: they agree
# on it at the next step boundary, checkpoint and exit with 75 (a second one exits at once).
forward() {
  interrupted="$1"; sig_pending=1
  local to="$1"; [ "$use_mpi" = 1 ] && case "$1" in TERM|INT|HUP) to=USR1 ;; esac
  [ -z "$child" ] || kill -s "$to" "$child" 2>/dev/null || true
}
for sig in TERM INT HUP USR1 USR2; do trap "forward $sig" "$sig"; done

base_world="$np"; world="$np"; acc="$base_acc"; cur_hostfile="$hostfile"; hosts="${hf_hosts[*]:-this machine}"
attempt=1
while :; do
  args=("$@")
  [ "$attempt" -gt 1 ] && [ "$resumes" = 0 ] && args+=(--resume)
  [ "$acc" != "$base_acc" ] && args+=(--accumulation-steps "$acc")
  if [ "$use_mpi" = 1 ]; then
    margs=("${mpi_args[@]}")
    for i in "${!margs[@]}"; do [ "${margs[$i]}" = --hostfile ] && margs[$((i + 1))]="$cur_hostfile"; done
    cmd=(mpirun -np "$world" "${extra[@]}" "${margs[@]}" "${xargs_[@]}" "$bin" "${args[@]}")
  else
    cmd=("$bin" "${args[@]}")
  fi
  if [ -n "$interrupted" ]; then   # a signal came between two attempts
    log_event "launch.sh received SIG$interrupted before attempt $attempt: not restarted"; exit "$rc"
  fi
  [ "$attempt" = 1 ] || log_event "attempt $attempt: $(printf '%q ' "${cmd[@]}")"
  sig_pending=0
  "${cmd[@]}" & child=$!
  while :; do
    rc=0; wait "$child" || rc=$?
    [ "$sig_pending" = 1 ] || break
    sig_pending=0   # wait was interrupted by a trapped signal: wait again for the job's own status
  done
  child=""
  if [ "$rc" = 0 ]; then
    [ "$attempt" = 1 ] || log_event "attempt $attempt finished (exit 0) on $world rank(s), hosts: $hosts"
    exit 0
  fi
  if [ -n "$interrupted" ]; then
    log_event "attempt $attempt ended with exit code $rc after launch.sh received SIG$interrupted: not restarted"
    exit "$rc"
  fi
  retry=0; for c in $RETRYABLE_EXIT_CODES; do [ "$c" = "$rc" ] && retry=1; done
  if [ "$retry" = 0 ]; then
    log_event "attempt $attempt exited with code $rc: not restarted (retryable exit codes: $RETRYABLE_EXIT_CODES)"
    exit "$rc"
  fi
  if [ "$attempt" -gt "$max_restarts" ]; then
    log_event "attempt $attempt exited with code $rc: no restart left (--max-restarts $max_restarts)"
    exit "$rc"
  fi
  # Hosts: every host of the original hostfile is checked again (one that recovered comes back).
  left=""
  if [ -n "$hostfile" ]; then
    health_check
    if [ "${#healthy[@]}" = 0 ]; then
      log_event "attempt $attempt exited with code $rc: no host of $hostfile passed the health check (${health_timeout}s): not restarted"
      exit "$rc"
    fi
    slots=0; hosts=""
    for i in "${healthy[@]}"; do slots=$((slots + hf_slots[i])); hosts="${hosts:+$hosts }${hf_hosts[$i]}"; done
    if [ "${#left_out[@]}" -gt 0 ]; then
      left="; left out after a failed health check: ${left_out[*]}"
      cur_hostfile="$work/hostfile.$attempt"
      for i in "${healthy[@]}"; do printf '%s\n' "${hf_lines[$i]}"; done > "$cur_hostfile"
      world=$(( base_world < slots ? base_world : slots ))
    else
      cur_hostfile="$hostfile"; world="$base_world"
    fi
  fi
  # The global batch (world × batch × accumulation) is kept through --accumulation-steps where it divides.
  target=$((base_world * base_acc))
  if [ $((target % world)) = 0 ]; then
    acc=$((target / world))
  else
    acc=$(( (2 * target + world - 1) / (2 * world) )); [ "$acc" -ge 1 ] || acc=1
    log_event "warning: the global batch $((base_world * batch * base_acc)) = $base_world ranks × batch $batch × accumulation $base_acc cannot be kept on $world ranks; the new global batch is $((world * batch * acc)) = $world × $batch × $acc"
  fi
  log_event "restart $attempt/$max_restarts: attempt $attempt exited with code $rc; relaunching with --resume on $world rank(s), accumulation $acc (global batch $((world * batch * acc))), hosts: $hosts$left"
  attempt=$((attempt + 1))
done
