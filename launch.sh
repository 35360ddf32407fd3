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
#
# Environment: scripts/env.sh is sourced (OpenBLAS kernel for the CPU, OpenMPI run-as-root variables when root).
# OPENBLAS_NUM_THREADS defaults to 1 per rank (ranks already use every core); set it to override.
# On several machines the repository (and the built binary) must be at the same path on every host.
#
# examples:
#   ./launch.sh -np 2 pretrain --data-path Tests/Fixtures/corpus/pretrain.jsonl --tokenizer Tests/Fixtures/tokenizers/minimind --max-steps 600
#   ./launch.sh --hostfile hostfiles/cluster.example -np 8 pretrain --batch-size 8
set -euo pipefail
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

np=1; use_mpi=0; config=release; build=1; dry=0
mpi_args=(); exports=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n|--np) np="$2"; shift 2 ;;
    --hostfile|-hostfile|--machinefile)
      [ -r "$2" ] || { echo "launch.sh: hostfile '$2' not readable" >&2; exit 2; }
      mpi_args+=(--hostfile "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); use_mpi=1; shift 2 ;;
    --host|-H) mpi_args+=(--host "$2"); use_mpi=1; shift 2 ;;
    --mca) mpi_args+=(--mca "$2" "$3"); shift 3 ;;
    -x) exports+=("$2"); shift 2 ;;
    --mpi) use_mpi=1; shift ;;
    --debug) config=debug; shift ;;
    --no-build) build=0; shift ;;
    --dry-run) dry=1; shift ;;
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
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

if [ "$build" = 1 ]; then
  swift build --package-path "$ROOT" -c "$config" --product trainer >&2
fi
bin="$(swift build --package-path "$ROOT" -c "$config" --show-bin-path)/trainer"
[ -x "$bin" ] || { echo "launch.sh: $bin not found (build it, or drop --no-build)" >&2; exit 2; }

if [ "$use_mpi" = 0 ]; then
  [ "$dry" = 1 ] && { echo "$bin $*"; exit 0; }
  exec "$bin" "$@"
fi

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
exec "${cmd[@]}"
