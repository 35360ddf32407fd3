// Low-precision inference weights: bf16 and GGUF Q8_0 formats, conversion, and matrix-vector kernels for decode.
// AVX2+FMA+F16C variants are chosen at run time (sm_quant_simd_level); a portable scalar variant runs elsewhere.
// Formats: bf16 = upper 16 bits of an IEEE fp32 (round-to-nearest-even); Q8_0 = blocks of 32 weights, each an fp16
// scale d = max|w|/127 followed by 32 int8 q = round(w/d) (GGML's block_q8_0, 34 bytes, ggml/src/ggml-quants.c).
#ifndef SWIFTMIND_CQUANT_H
#define SWIFTMIND_CQUANT_H
#include <stddef.h>
#include <stdint.h>

#define SM_Q8_0_BLOCK 32
#define SM_Q8_0_BYTES 34

/// 1 when this CPU runs the AVX2+FMA+F16C kernels (and SWIFTMIND_QUANT_SCALAR is not set), else 0 (scalar).
int sm_quant_simd_level(void);
/// Overrides the kernel choice (0 = scalar; 1 = AVX2, only when the CPU has it); returns the level in effect. Tests.
int sm_quant_set_simd_level(int level);

/// dst[count] = bf16(src), round to nearest even; NaN stays a quiet NaN.
void sm_f32_to_bf16(const float *src, size_t count, uint16_t *dst);
/// dst[count] = f32(src).
void sm_bf16_to_f32(const uint16_t *src, size_t count, float *dst);
/// dst[count] = src rounded to bf16 (as sm_f32_to_bf16) and kept as fp32 (low 16 bits zero); dst may be src. The
/// operands of the converted bf16 matrix products of `--dtype bfloat16` training.
void sm_round_bf16_f32(const float *src, size_t count, float *dst);
/// dst[count] += f32(src): one rank's bf16 gradients added in fp32 (the bf16 gradient all-reduce's sum).
void sm_bf16_accumulate_f32(const uint16_t *src, size_t count, float *dst);
/// Q8_0 blocks of src[count] (count % 32 == 0) into dst (count/32 · 34 bytes), as GGML's quantize_row_q8_0_ref.
void sm_quantize_q8_0(const float *src, size_t count, uint8_t *dst);
/// dst[count] = d·q of the Q8_0 blocks in src.
void sm_dequantize_q8_0(const uint8_t *src, size_t count, float *dst);

/// Activation rows for the int8·int8 Q8_0 kernel: x[n, ic] (ic % 32 == 0) → xq[n, ic] int8 and xd[n, ic/32] f32
/// scales (per 32-block, d = max|x|/127, q = round(x/d)).
void sm_quantize_act_q8(const float *x, size_t n, size_t ic, int8_t *xq, float *xd);
/// Activation rows for the Q8_0 × int16 kernel: x[n, ic] (ic % 32 == 0) → xq[n, ic] int16 and xd[n, ic/32] f32 scales
/// (per 32-block, d = max|x|/32767, q = round(x/d) half away from zero): a relative rounding error ≤ 2⁻¹⁶ of the block
/// maximum, about 1/256 of Q8_0's weight rounding (d_w/2 = 2⁻⁸ of the weight block's maximum). A block whose maximum
/// is below 32767/FLT_MAX (or zero) gets d = 0 and q = 0.
void sm_quantize_act_q16(const float *x, size_t n, size_t ic, int16_t *xq, float *xd);
/// Activation rows for the bf16 kernel: x[n, ic] (ic % 16 == 0) reordered per 16-group as the even then the odd
/// elements (the order the kernel unpacks bf16 pairs in); xp[n, ic].
void sm_bf16_prepare_act(const float *x, size_t n, size_t ic, float *xp);

/// out[r·ldo + o] (= or += when accumulate) Σ_k W[o, k]·x[r, k] for rows r < n (1 ≤ n ≤ 8) and outputs o in
/// [o0, o1). W is [OC, ic] bf16 row-major; xp comes from sm_bf16_prepare_act.
void sm_gemv_bf16(const uint16_t *w, const float *xp, size_t n, size_t ic, size_t o0, size_t o1,
                  float *out, size_t ldo, int accumulate);
/// As sm_gemv_bf16 for Q8_0 rows (ic/32 blocks each) against f32 activations x[n, ic] (dequantize + FMA).
void sm_gemv_q8_0_f32(const uint8_t *w, const float *x, size_t n, size_t ic, size_t o0, size_t o1,
                      float *out, size_t ldo, int accumulate);
/// As sm_gemv_q8_0_f32 against int8 activation rows from sm_quantize_act_q8 (int8 dot products, GGML's scheme).
void sm_gemv_q8_0_q8(const uint8_t *w, const int8_t *xq, const float *xd, size_t n, size_t ic, size_t o0, size_t o1,
                     float *out, size_t ldo, int accumulate);

/// As sm_gemv_q8_0_f32 against int16 activation rows from sm_quantize_act_q16 (int16 dot products; exact integer
/// block sums).
void sm_gemv_q8_0_q16(const uint8_t *w, const int16_t *xq, const float *xd, size_t n, size_t ic, size_t o0, size_t o1,
                      float *out, size_t ldo, int accumulate);

/// One part of a pool job: `part` in 0..<parts.
typedef void (*sm_pool_fn)(void *ctx, int part, int parts);
/// Runs fn(ctx, p, parts) for every p < parts and returns when all have returned (parts is capped at the CPUs the
/// process may run on
/// and 64: spinning threads beyond the CPUs would only wait for each other); part 0 on the calling
/// thread, the others on persistent worker threads that spin-wait between jobs (then sleep after
/// SWIFTMIND_POOL_SPIN_US microseconds without a job, default 1000). For the many small products of one decode step,
/// where waking a thread per product costs more than the product. Spinning threads yield the CPU every 256 pauses, so
/// oversubscribed CPUs (two ranks decoding on two cores) slow it down instead of stalling it. A nested call (from inside a part) or a call while
/// another thread's job runs executes all its parts on the calling thread, in order. Returns the number of parts run (after the cap).
int sm_pool_run(int parts, sm_pool_fn fn, void *ctx);

#endif
