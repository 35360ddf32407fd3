// bf16 matrix products through oneDNN (Debian's libdnnl-dev, C API): the engine of `--dtype bfloat16` on CPUs with
// native bf16 (avx512_bf16 / AMX), where oneDNN's brgemm kernels multiply bf16 at about twice fp32's rate.
#ifndef SWIFTMIND_CDNNL_H
#define SWIFTMIND_CDNNL_H
#include <stddef.h>

/// 1 when oneDNN creates a bf16 × bf16 → fp32 matmul on this CPU, else 0. `info` (cap bytes, may be NULL) receives
/// the implementation name (e.g. "brg:avx512_core_bf16") or why it failed.
int sm_dnnl_bf16_probe(char *info, size_t cap);

/// Row-major C[m, n] = alpha·op(A)·op(B) + beta·C (op = transpose when trans*), as cblas_sgemm, with A and B rounded
/// to bf16 (round to nearest even) and multiplied by oneDNN with fp32 accumulation. A and B are fp32 (values already
/// bf16 are taken exactly); they are packed into dense per-thread bf16 buffers. Primitives are cached per shape.
/// Returns 0 on success, else a oneDNN status (nothing written).
int sm_dnnl_gemm_bf16(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                      const float *b, long ldb, float beta, float *c, long ldc);

/// As sm_dnnl_gemm_bf16 with fp32 operands (the same descriptors, packing, cache and execution): checks the shim on a
/// CPU where oneDNN has no bf16 matmul (tests only).
int sm_dnnl_gemm_f32_check(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                           const float *b, long ldb, float beta, float *c, long ldc);

#endif
