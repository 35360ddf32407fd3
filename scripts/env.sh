# Sourced by launch.sh, scripts/test.sh and .ci/run: the environment SwiftMind runs best in.
# - OpenBLAS 0.3.21 does not recognise some recent CPUs and falls back to slow Prescott kernels; pick the kernel
#   from the CPU flags (must be set before the library loads). An explicit OPENBLAS_CORETYPE is kept.
# - OpenMPI refuses to run as root unless told that is intended.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
  fi
fi
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
