// bf16 / Q8_0 conversion and decode kernels (see include/CQuant.h). The AVX2 functions carry their own target
// attribute, so the target compiles for any x86-64 and picks them at run time; other CPUs run the scalar loops.
#include "CQuant.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SM_X86 1
#define SM_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SM_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define SM_INLINE static inline __attribute__((always_inline))
#else
#define SM_X86 0
#endif

static int sm_level = -1;

int sm_quant_simd_level(void) {
    int l = sm_level;
    if (l >= 0) return l;
    l = 0;
#if SM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        l = 1;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl")) l = 2;
    }
#endif
    // A cap: 0|scalar, 1|avx2, 2|avx512 (e.g. the AVX2 kernels on an AVX-512 CPU). Anything else is ignored, loudly.
    const char *cap = getenv("SWIFTMIND_QUANT_LEVEL");
    if (cap && cap[0]) {
        int c = -1;
        if (!strcmp(cap, "0") || !strcasecmp(cap, "scalar")) c = 0;
        else if (!strcmp(cap, "1") || !strcasecmp(cap, "avx2")) c = 1;
        else if (!strcmp(cap, "2") || !strcasecmp(cap, "avx512")) c = 2;
        if (c < 0) fprintf(stderr, "warning: SWIFTMIND_QUANT_LEVEL=%s ignored (use 0|scalar, 1|avx2 or 2|avx512)\n", cap);
        else if (c < l) l = c;
    }
    const char *s = getenv("SWIFTMIND_QUANT_SCALAR");
    if (s && s[0] && strcmp(s, "0") != 0) l = 0;
    sm_level = l;
    return l;
}

int sm_quant_set_simd_level(int level) {
    sm_level = -1;
    const int best = sm_quant_simd_level();
    sm_level = level < best ? (level < 0 ? 0 : level) : best;
    return sm_level;
}

// MARK: - scalar conversions

static inline uint16_t f32_to_f16_bits(float x) {
    _Float16 h = (_Float16)x;            // IEEE round to nearest even
    uint16_t b; memcpy(&b, &h, 2); return b;
}
static inline float f16_bits_to_f32(uint16_t b) {
    _Float16 h; memcpy(&h, &b, 2); return (float)h;
}
static inline uint16_t f32_to_bf16_bits(float x) {
    uint32_t u; memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);   // NaN → quiet NaN
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
static inline float bf16_bits_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f;
}

#if SM_X86
// f32_to_bf16_bits on 8 lanes (round to nearest even; NaN lanes keep their upper bits with the quiet bit set).
SM_INLINE SM_AVX2 __m256i round_bf16_lanes(__m256i u) {
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
    const __m256i n = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
    return _mm256_and_si256(_mm256_blendv_epi8(r, n, nan), _mm256_set1_epi32((int)0xFFFF0000u));
}
static SM_AVX2 void f32_to_bf16_avx2(const float *src, size_t count, uint16_t *dst) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        const __m256i a = _mm256_srli_epi32(round_bf16_lanes(_mm256_castps_si256(_mm256_loadu_ps(src + i))), 16);
        const __m256i b = _mm256_srli_epi32(round_bf16_lanes(_mm256_castps_si256(_mm256_loadu_ps(src + i + 8))), 16);
        // packus works per 128-bit lane: a0 b0 a1 b1 → reorder the 64-bit quarters to a0 a1 b0 b1.
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < count; i++) dst[i] = f32_to_bf16_bits(src[i]);
}
#endif

void sm_f32_to_bf16(const float *src, size_t count, uint16_t *dst) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { f32_to_bf16_avx2(src, count, dst); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] = f32_to_bf16_bits(src[i]);
}
#if SM_X86
static SM_AVX2 void bf16_to_f32_avx2(const uint16_t *src, size_t count, float *dst) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < count; i++) dst[i] = bf16_bits_to_f32(src[i]);
}
#endif

void sm_bf16_to_f32(const uint16_t *src, size_t count, float *dst) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { bf16_to_f32_avx2(src, count, dst); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] = bf16_bits_to_f32(src[i]);
}

static inline float round_bf16_f32(float x) { return bf16_bits_to_f32(f32_to_bf16_bits(x)); }
#if SM_X86
static SM_AVX2 void round_bf16_f32_avx2(const float *src, size_t count, float *dst) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(round_bf16_lanes(_mm256_castps_si256(_mm256_loadu_ps(src + i)))));
    for (; i < count; i++) dst[i] = round_bf16_f32(src[i]);
}
static SM_AVX2 void bf16_accumulate_avx2(const uint16_t *src, size_t count, float *dst) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        const __m256i v = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i))), 16);
        _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_castsi256_ps(v)));
    }
    for (; i < count; i++) dst[i] += bf16_bits_to_f32(src[i]);
}
#endif

void sm_bf16_accumulate_f32(const uint16_t *src, size_t count, float *dst) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { bf16_accumulate_avx2(src, count, dst); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] += bf16_bits_to_f32(src[i]);
}

void sm_round_bf16_f32(const float *src, size_t count, float *dst) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { round_bf16_f32_avx2(src, count, dst); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] = round_bf16_f32(src[i]);
}

void sm_quantize_q8_0(const float *src, size_t count, uint8_t *dst) {
    for (size_t b = 0; b < count / SM_Q8_0_BLOCK; b++) {
        const float *x = src + b * SM_Q8_0_BLOCK;
        uint8_t *blk = dst + b * SM_Q8_0_BYTES;
        float amax = 0;
        for (int j = 0; j < SM_Q8_0_BLOCK; j++) { float a = fabsf(x[j]); if (a > amax) amax = a; }
        const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_f16_bits(d);
        memcpy(blk, &dh, 2);                                  // little-endian hosts only (x86-64, arm64)
        int8_t *q = (int8_t *)(blk + 2);
        for (int j = 0; j < SM_Q8_0_BLOCK; j++) q[j] = (int8_t)roundf(x[j] * id);
    }
}
#if SM_X86
static SM_AVX2 void dequantize_q8_0_avx2(const uint8_t *src, size_t count, float *dst) {
    for (size_t b = 0; b < count / SM_Q8_0_BLOCK; b++) {
        const uint8_t *blk = src + b * SM_Q8_0_BYTES;
        uint16_t dh; memcpy(&dh, blk, 2);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
        for (int g = 0; g < 4; g++) {
            const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * g))));
            _mm256_storeu_ps(dst + b * SM_Q8_0_BLOCK + 8 * g, _mm256_mul_ps(d, q));
        }
    }
}
#endif

void sm_dequantize_q8_0(const uint8_t *src, size_t count, float *dst) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { dequantize_q8_0_avx2(src, count, dst); return; }
#endif
    for (size_t b = 0; b < count / SM_Q8_0_BLOCK; b++) {
        const uint8_t *blk = src + b * SM_Q8_0_BYTES;
        uint16_t dh; memcpy(&dh, blk, 2);
        const float d = f16_bits_to_f32(dh);
        const int8_t *q = (const int8_t *)(blk + 2);
        for (int j = 0; j < SM_Q8_0_BLOCK; j++) dst[b * SM_Q8_0_BLOCK + j] = d * (float)q[j];
    }
}

#if SM_X86
// roundf (half away from zero) on 8 lanes: truncate, then step away from zero where the dropped part is ≥ 0.5.
SM_INLINE SM_AVX2 __m256 round_away_lanes(__m256 r) {
    const __m256 t = _mm256_round_ps(r, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 half = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(r, t), absMask), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 step = _mm256_or_ps(_mm256_and_ps(r, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(half, step));
}
// One 32-value block v of an activation row: d = max|v|/qmax (returned), and round-half-away(v/d) in four 8-lane int32
// registers, as the scalar quantizers compute them.
SM_INLINE SM_AVX2 float quantize_block_lanes(const float *v, float qmax, __m256i *i0, __m256i *i1, __m256i *i2, __m256i *i3) {
    const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8), v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
    const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absMask), _mm256_and_ps(v1, absMask)),
                                   _mm256_max_ps(_mm256_and_ps(v2, absMask), _mm256_and_ps(v3, absMask)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h), inv = 1.0f / (amax / qmax);
    // An all-zero block, or one so small (max < qmax/FLT_MAX) that 1/d overflows: d = 0 and every q = 0, as the
    // scalar quantizer.
    const int zero = amax / qmax == 0 || isinf(inv);
    const float d = zero ? 0.0f : amax / qmax, id = zero ? 0.0f : inv;
    const __m256 s = _mm256_set1_ps(id);
    *i0 = _mm256_cvtps_epi32(round_away_lanes(_mm256_mul_ps(v0, s)));
    *i1 = _mm256_cvtps_epi32(round_away_lanes(_mm256_mul_ps(v1, s)));
    *i2 = _mm256_cvtps_epi32(round_away_lanes(_mm256_mul_ps(v2, s)));
    *i3 = _mm256_cvtps_epi32(round_away_lanes(_mm256_mul_ps(v3, s)));
    return d;
}
// As the scalar loop below (same d, same q), 32 values per block in four 8-lane registers.
static SM_AVX2 void quantize_act_q8_avx2(const float *x, size_t n, size_t ic, int8_t *xq, float *xd) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t r = 0; r < n; r++)
        for (size_t b = 0; b < nb; b++) {
            const float *v = x + r * ic + b * SM_Q8_0_BLOCK;
            __m256i i0, i1, i2, i3;
            xd[r * nb + b] = quantize_block_lanes(v, 127.0f, &i0, &i1, &i2, &i3);
            // packs work per 128-bit lane; the permutation puts the 32 bytes back in order.
            const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            _mm256_storeu_si256((__m256i *)(xq + r * ic + b * SM_Q8_0_BLOCK), _mm256_permutevar8x32_epi32(p, order));
        }
}
#endif

// Activation rows x[n, ic] quantized per 32-block (d = max|v|/qmax, q = round-half-away(v/d)) into int8 (q8, qmax 127)
// or int16 (q16, qmax 32767, clamped as the SIMD pack saturates). A block so small that 1/d overflows (max <
// qmax/FLT_MAX), or all zero, gets d = 0 and q = 0.
static void quantize_act_scalar(const float *x, size_t n, size_t ic, float qmax, int8_t *q8, int16_t *q16, float *xd) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    for (size_t r = 0; r < n; r++) {
        for (size_t b = 0; b < nb; b++) {
            const float *v = x + r * ic + b * SM_Q8_0_BLOCK;
            float amax = 0;
            for (int j = 0; j < SM_Q8_0_BLOCK; j++) { float a = fabsf(v[j]); if (a > amax) amax = a; }
            const float d = amax / qmax, inv = 1.0f / d;
            const int zero = d == 0 || isinf(inv);
            const float id = zero ? 0.0f : inv;
            xd[r * nb + b] = zero ? 0.0f : d;
            const size_t at = r * ic + b * SM_Q8_0_BLOCK;
            for (int j = 0; j < SM_Q8_0_BLOCK; j++) {
                const float t = roundf(v[j] * id);
                if (q8) q8[at + j] = (int8_t)t;
                else q16[at + j] = (int16_t)(t > 32767.0f ? 32767.0f : (t < -32768.0f ? -32768.0f : t));
            }
        }
    }
}

void sm_quantize_act_q8(const float *x, size_t n, size_t ic, int8_t *xq, float *xd) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { quantize_act_q8_avx2(x, n, ic, xq, xd); return; }
#endif
    quantize_act_scalar(x, n, ic, 127.0f, xq, NULL, xd);
}

// int16 activations for the Q8_0 × int16 kernels: per 32-block d = max|x|/32767, q = round(x/d) (half away from zero),
// clamped to int16 (a product rounded up to ±32768 saturates as the SIMD pack does). A NaN activation is not
// propagated (as in the int8 path): the block maximum ignores it and its q is arbitrary; fp32 activations keep it.
#if SM_X86
static SM_AVX2 void quantize_act_q16_avx2(const float *x, size_t n, size_t ic, int16_t *xq, float *xd) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    for (size_t r = 0; r < n; r++)
        for (size_t b = 0; b < nb; b++) {
            const float *v = x + r * ic + b * SM_Q8_0_BLOCK;
            __m256i i0, i1, i2, i3;
            xd[r * nb + b] = quantize_block_lanes(v, 32767.0f, &i0, &i1, &i2, &i3);
            // packs works per 128-bit lane; 0xD8 puts the 64-bit quarters back in order.
            int16_t *q = xq + r * ic + b * SM_Q8_0_BLOCK;
            _mm256_storeu_si256((__m256i *)q, _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xD8));
            _mm256_storeu_si256((__m256i *)(q + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(i2, i3), 0xD8));
        }
}
#endif

void sm_quantize_act_q16(const float *x, size_t n, size_t ic, int16_t *xq, float *xd) {
#if SM_X86
    if (sm_quant_simd_level() >= 1) { quantize_act_q16_avx2(x, n, ic, xq, xd); return; }
#endif
    quantize_act_scalar(x, n, ic, 32767.0f, NULL, xq, xd);
}

// The AVX-512 bf16 kernel unpacks 32 weights at a time: activations per 32-group, the 16 even then the 16 odd ones.
static int bf16_wide(size_t ic) { return sm_quant_simd_level() >= 2 && ic % 32 == 0; }

void sm_bf16_prepare_act(const float *x, size_t n, size_t ic, float *xp) {
    if (bf16_wide(ic)) {
        for (size_t r = 0; r < n; r++)
            for (size_t g = 0; g < ic; g += 32)
                for (int j = 0; j < 16; j++) {
                    xp[r * ic + g + j] = x[r * ic + g + 2 * j];
                    xp[r * ic + g + 16 + j] = x[r * ic + g + 2 * j + 1];
                }
        return;
    }
    for (size_t r = 0; r < n; r++)
        for (size_t g = 0; g < ic; g += 16)
            for (int j = 0; j < 8; j++) {
                xp[r * ic + g + j] = x[r * ic + g + 2 * j];
                xp[r * ic + g + 8 + j] = x[r * ic + g + 2 * j + 1];
            }
}

static inline void store_out(float *out, size_t ldo, size_t r, size_t o, float v, int accumulate) {
    if (accumulate) out[r * ldo + o] += v; else out[r * ldo + o] = v;
}

// MARK: - scalar kernels

static void gemv_bf16_scalar(const uint16_t *w, const float *xp, size_t n, size_t ic, size_t o0, size_t o1,
                             float *out, size_t ldo, int accumulate) {
    for (size_t o = o0; o < o1; o++) {
        const uint16_t *wr = w + o * ic;
        for (size_t r = 0; r < n; r++) {
            const float *x = xp + r * ic;
            float s = 0;
            for (size_t g = 0; g < ic; g += 16)
                for (int j = 0; j < 8; j++)
                    s += bf16_bits_to_f32(wr[g + 2 * j]) * x[g + j] + bf16_bits_to_f32(wr[g + 2 * j + 1]) * x[g + 8 + j];
            store_out(out, ldo, r, o, s, accumulate);
        }
    }
}

static void gemv_q8_0_f32_scalar(const uint8_t *w, const float *x, size_t n, size_t ic, size_t o0, size_t o1,
                                 float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    for (size_t o = o0; o < o1; o++) {
        const uint8_t *wr = w + o * nb * SM_Q8_0_BYTES;
        for (size_t r = 0; r < n; r++) {
            float s = 0;
            for (size_t b = 0; b < nb; b++) {
                const uint8_t *blk = wr + b * SM_Q8_0_BYTES;
                uint16_t dh; memcpy(&dh, blk, 2);
                const int8_t *q = (const int8_t *)(blk + 2);
                const float *xv = x + r * ic + b * SM_Q8_0_BLOCK;
                float bs = 0;
                for (int j = 0; j < SM_Q8_0_BLOCK; j++) bs += (float)q[j] * xv[j];
                s += f16_bits_to_f32(dh) * bs;
            }
            store_out(out, ldo, r, o, s, accumulate);
        }
    }
}

// Q8_0 × integer activations (int8 from sm_quantize_act_q8 in q8, or int16 from sm_quantize_act_q16 in q16; the
// other NULL). A 32-block's integer sum is at most 32·127·32768 < 2³¹.
static void gemv_q8_0_int_scalar(const uint8_t *w, const int8_t *q8, const int16_t *q16, const float *xd, size_t n,
                                 size_t ic, size_t o0, size_t o1, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    for (size_t o = o0; o < o1; o++) {
        const uint8_t *wr = w + o * nb * SM_Q8_0_BYTES;
        for (size_t r = 0; r < n; r++) {
            float s = 0;
            for (size_t b = 0; b < nb; b++) {
                const uint8_t *blk = wr + b * SM_Q8_0_BYTES;
                uint16_t dh; memcpy(&dh, blk, 2);
                const int8_t *q = (const int8_t *)(blk + 2);
                const size_t at = r * ic + b * SM_Q8_0_BLOCK;
                int32_t bs = 0;
                for (int j = 0; j < SM_Q8_0_BLOCK; j++) bs += (int32_t)q[j] * (q8 ? (int32_t)q8[at + j] : (int32_t)q16[at + j]);
                s += f16_bits_to_f32(dh) * xd[r * nb + b] * (float)bs;
            }
            store_out(out, ldo, r, o, s, accumulate);
        }
    }
}

// MARK: - AVX2 kernels
// Each computes a tile of OT output rows × R activation rows with OT·R independent 8-lane accumulators (the weights
// of the tile are read once from memory, then from L1 for the other activation rows).
#if SM_X86

SM_INLINE SM_AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

SM_INLINE SM_AVX2 void bf16_tile(const uint16_t *w, const float *xp, size_t ic, size_t o, int OT, int R,
                                  float *out, size_t ldo, int accumulate) {
    __m256 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm256_setzero_ps();
    const __m256i hiMask = _mm256_set1_epi32((int)0xFFFF0000u);
    for (size_t k = 0; k < ic; k += 16) {
        for (int t = 0; t < OT; t++) {
            if ((k & 31) == 0) _mm_prefetch((const char *)(w + (o + t + OT) * ic + k), _MM_HINT_T0);   // next tile's row
            const __m256i v = _mm256_loadu_si256((const __m256i *)(w + (o + t) * ic + k));
            const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(v, hiMask));
            for (int r = 0; r < R; r++) {
                acc[t][r] = _mm256_fmadd_ps(even, _mm256_loadu_ps(xp + r * ic + k), acc[t][r]);
                acc[t][r] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xp + r * ic + k + 8), acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, hsum8(acc[t][r]), accumulate);
}

SM_INLINE SM_AVX2 void q8_f32_tile(const uint8_t *w, const float *x, size_t ic, size_t o, int OT, int R,
                                    float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK, rowBytes = nb * SM_Q8_0_BYTES;
    __m256 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            _mm_prefetch((const char *)(blk + OT * rowBytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(blk + OT * rowBytes + 63), _MM_HINT_T0);
            uint16_t dh; memcpy(&dh, blk, 2);
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
            __m256 wq[4];
            for (int g = 0; g < 4; g++)
                wq[g] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * g))));
            for (int r = 0; r < R; r++) {
                const float *xv = x + r * ic + b * SM_Q8_0_BLOCK;
                __m256 s0 = _mm256_mul_ps(wq[0], _mm256_loadu_ps(xv));
                __m256 s1 = _mm256_mul_ps(wq[1], _mm256_loadu_ps(xv + 8));
                s0 = _mm256_fmadd_ps(wq[2], _mm256_loadu_ps(xv + 16), s0);
                s1 = _mm256_fmadd_ps(wq[3], _mm256_loadu_ps(xv + 24), s1);
                acc[t][r] = _mm256_fmadd_ps(d, _mm256_add_ps(s0, s1), acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, hsum8(acc[t][r]), accumulate);
}

SM_INLINE SM_AVX2 void q8_q8_tile(const uint8_t *w, const int8_t *xq, const float *xd, size_t ic, size_t o, int OT,
                                   int R, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK, rowBytes = nb * SM_Q8_0_BYTES;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            _mm_prefetch((const char *)(blk + OT * rowBytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(blk + OT * rowBytes + 63), _MM_HINT_T0);
            uint16_t dh; memcpy(&dh, blk, 2);
            const float dw = _cvtsh_ss(dh);
            const __m256i qw = _mm256_loadu_si256((const __m256i *)(blk + 2));
            const __m256i aw = _mm256_sign_epi8(qw, qw);                  // |q_w| (q ∈ [−127, 127])
            for (int r = 0; r < R; r++) {
                const __m256i qx = _mm256_loadu_si256((const __m256i *)(xq + r * ic + b * SM_Q8_0_BLOCK));
                const __m256i sx = _mm256_sign_epi8(qx, qw);              // q_x·sign(q_w)
                const __m256i p16 = _mm256_maddubs_epi16(aw, sx);         // pairs: ≤ 2·127² < 2¹⁵, no saturation
                const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[t][r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[r * nb + b]), p, acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, hsum8(acc[t][r]), accumulate);
}

// Output rows in tiles of 4 (one activation row) or 2 (2–4 rows); activation rows in chunks of ≤ 4. TILE is a tile
// function called as TILE(<ARGS unparenthesized>, o, OT, R, out + r0 · ldo, ldo, accumulate); ARGS may use r0.
#define SM_UNPAREN(...) __VA_ARGS__
#define SM_DRIVE(TILE, ARGS)                                                                                         \
    for (size_t r0 = 0; r0 < n; r0 += 4) {                                                                          \
        const size_t R = n - r0 < 4 ? n - r0 : 4;                                                                   \
        float *const o_r0 = out + r0 * ldo;                                                                         \
        size_t o = o0;                                                                                              \
        switch (R) {                                                                                                \
        case 1: for (; o + 4 <= o1; o += 4) TILE(SM_UNPAREN ARGS, o, 4, 1, o_r0, ldo, accumulate); break;           \
        case 2: for (; o + 2 <= o1; o += 2) TILE(SM_UNPAREN ARGS, o, 2, 2, o_r0, ldo, accumulate); break;           \
        case 3: for (; o + 2 <= o1; o += 2) TILE(SM_UNPAREN ARGS, o, 2, 3, o_r0, ldo, accumulate); break;           \
        default: for (; o + 2 <= o1; o += 2) TILE(SM_UNPAREN ARGS, o, 2, 4, o_r0, ldo, accumulate); break;          \
        }                                                                                                           \
        for (; o < o1; o++) switch (R) {                                                                            \
            case 1: TILE(SM_UNPAREN ARGS, o, 1, 1, o_r0, ldo, accumulate); break;                                   \
            case 2: TILE(SM_UNPAREN ARGS, o, 1, 2, o_r0, ldo, accumulate); break;                                   \
            case 3: TILE(SM_UNPAREN ARGS, o, 1, 3, o_r0, ldo, accumulate); break;                                   \
            default: TILE(SM_UNPAREN ARGS, o, 1, 4, o_r0, ldo, accumulate); break;                                  \
        }                                                                                                           \
    }

// The three matrix-vector drivers of one instruction set (gemv_bf16_ISA, gemv_q8_0_f32_ISA, gemv_q8_0_q8_ISA) over its
// tile functions.
#define SM_GEMV_FAMILY(ISA, TARGET, BF16_TILE, Q8F_TILE, Q8Q_TILE)                                                  \
    static TARGET void gemv_bf16_##ISA(const uint16_t *w, const float *xp, size_t n, size_t ic, size_t o0,          \
                                       size_t o1, float *out, size_t ldo, int accumulate) {                         \
        SM_DRIVE(BF16_TILE, (w, xp + r0 * ic, ic))                                                                  \
    }                                                                                                               \
    static TARGET void gemv_q8_0_f32_##ISA(const uint8_t *w, const float *x, size_t n, size_t ic, size_t o0,        \
                                           size_t o1, float *out, size_t ldo, int accumulate) {                     \
        SM_DRIVE(Q8F_TILE, (w, x + r0 * ic, ic))                                                                    \
    }                                                                                                               \
    static TARGET void gemv_q8_0_q8_##ISA(const uint8_t *w, const int8_t *xq, const float *xd, size_t n, size_t ic, \
                                          size_t o0, size_t o1, float *out, size_t ldo, int accumulate) {           \
        const size_t nb = ic / SM_Q8_0_BLOCK;                                                                       \
        SM_DRIVE(Q8Q_TILE, (w, xq + r0 * ic, xd + r0 * nb, ic))                                                     \
    }

// Q8_0 × int16 activations: the 32 weights sign-extended to int16, vpmaddwd against the activations. Each int32 lane
// sums 4 products (≤ 4·127·32768 < 2²⁴), so its conversion to float is exact.
SM_INLINE SM_AVX2 void q8_q16_tile(const uint8_t *w, const int16_t *xq, const float *xd, size_t ic, size_t o, int OT,
                                    int R, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK, rowBytes = nb * SM_Q8_0_BYTES;
    __m256 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            _mm_prefetch((const char *)(blk + OT * rowBytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(blk + OT * rowBytes + 63), _MM_HINT_T0);
            uint16_t dh; memcpy(&dh, blk, 2);
            const float dw = _cvtsh_ss(dh);
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
            for (int r = 0; r < R; r++) {
                const int16_t *xv = xq + r * ic + b * SM_Q8_0_BLOCK;
                const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xv)),
                                                   _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xv + 16))));
                acc[t][r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[r * nb + b]), _mm256_cvtepi32_ps(s), acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, hsum8(acc[t][r]), accumulate);
}
static SM_AVX2 void gemv_q8_0_q16_avx2(const uint8_t *w, const int16_t *xq, const float *xd, size_t n, size_t ic,
                                       size_t o0, size_t o1, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    SM_DRIVE(q8_q16_tile, (w, xq + r0 * ic, xd + r0 * nb, ic))
}

SM_GEMV_FAMILY(avx2, SM_AVX2, bf16_tile, q8_f32_tile, q8_q8_tile)
#endif

// MARK: - AVX-512 kernels (F, BW, DQ, VL): the AVX2 tiles with 16-lane accumulators.
#if SM_X86

SM_INLINE SM_AVX512 void bf16_tile512(const uint16_t *w, const float *xp, size_t ic, size_t o, int OT, int R,
                                       float *out, size_t ldo, int accumulate) {
    __m512 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm512_setzero_ps();
    const __m512i hiMask = _mm512_set1_epi32((int)0xFFFF0000u);
    for (size_t k = 0; k < ic; k += 32) {
        for (int t = 0; t < OT; t++) {
            _mm_prefetch((const char *)(w + (o + t + OT) * ic + k), _MM_HINT_T0);                      // next tile's row
            const __m512i v = _mm512_loadu_si512((const void *)(w + (o + t) * ic + k));
            const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(v, hiMask));
            for (int r = 0; r < R; r++) {
                acc[t][r] = _mm512_fmadd_ps(even, _mm512_loadu_ps(xp + r * ic + k), acc[t][r]);
                acc[t][r] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(xp + r * ic + k + 16), acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++)
        for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, _mm512_reduce_add_ps(acc[t][r]), accumulate);
}

// Q8_0 × fp32 activations, two blocks per 16 lanes of int8 → fp32.
SM_INLINE SM_AVX512 void q8_f32_tile512(const uint8_t *w, const float *x, size_t ic, size_t o, int OT, int R,
                                         float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK, rowBytes = nb * SM_Q8_0_BYTES;
    __m512 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            _mm_prefetch((const char *)(blk + OT * rowBytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(blk + OT * rowBytes + 63), _MM_HINT_T0);
            uint16_t dh; memcpy(&dh, blk, 2);
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(dh));
            const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
            const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
            for (int r = 0; r < R; r++) {
                const float *xv = x + r * ic + b * SM_Q8_0_BLOCK;
                const __m512 s = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(xv)));
                acc[t][r] = _mm512_fmadd_ps(d, s, acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++)
        for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, _mm512_reduce_add_ps(acc[t][r]), accumulate);
}

// Q8_0 × int8 activations: two blocks per 512-bit register (GGML's |w|·(x·sign w) pattern; AVX-512 has no vpsignb, so
// the activations are negated under the weights' sign mask).
SM_INLINE SM_AVX512 void q8_q8_tile512(const uint8_t *w, const int8_t *xq, const float *xd, size_t ic, size_t o, int OT,
                                        int R, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK, rowBytes = nb * SM_Q8_0_BYTES;
    const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
    __m512 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm512_setzero_ps();
    size_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            _mm_prefetch((const char *)(blk + OT * rowBytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(blk + OT * rowBytes + 63), _MM_HINT_T0);
            uint16_t d0, d1; memcpy(&d0, blk, 2); memcpy(&d1, blk + SM_Q8_0_BYTES, 2);
            const float dw0 = _cvtsh_ss(d0), dw1 = _cvtsh_ss(d1);
            const __m512i qw = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 2))),
                                                  _mm256_loadu_si256((const __m256i *)(blk + SM_Q8_0_BYTES + 2)), 1);
            const __m512i aw = _mm512_abs_epi8(qw);
            const __mmask64 neg = _mm512_movepi8_mask(qw);
            for (int r = 0; r < R; r++) {
                const __m512i qx = _mm512_loadu_si512((const void *)(xq + r * ic + b * SM_Q8_0_BLOCK));
                const __m512i sx = _mm512_mask_sub_epi8(qx, neg, zero, qx);
                const __m512 p = _mm512_cvtepi32_ps(_mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), ones));
                const float *dx = xd + r * nb + b;
                const __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(dw0 * dx[0]), _mm256_set1_ps(dw1 * dx[1]), 1);
                acc[t][r] = _mm512_fmadd_ps(sc, p, acc[t][r]);
            }
        }
    }
    float tail[4][4] = {{0}};
    for (; b < nb; b++)                                         // an odd block count: the last block alone
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            uint16_t dh; memcpy(&dh, blk, 2);
            const int8_t *q = (const int8_t *)(blk + 2);
            for (int r = 0; r < R; r++) {
                const int8_t *xv = xq + r * ic + b * SM_Q8_0_BLOCK;
                int32_t bs = 0;
                for (int j = 0; j < SM_Q8_0_BLOCK; j++) bs += (int32_t)q[j] * (int32_t)xv[j];
                tail[t][r] += _cvtsh_ss(dh) * xd[r * nb + b] * (float)bs;
            }
        }
    for (int t = 0; t < OT; t++)
        for (int r = 0; r < R; r++)
            store_out(out, ldo, r, o + t, _mm512_reduce_add_ps(acc[t][r]) + tail[t][r], accumulate);
}

// Q8_0 × int16 activations, one block per 512-bit register (each int32 lane sums 2 products: exact in float).
SM_INLINE SM_AVX512 void q8_q16_tile512(const uint8_t *w, const int16_t *xq, const float *xd, size_t ic, size_t o,
                                         int OT, int R, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK, rowBytes = nb * SM_Q8_0_BYTES;
    __m512 acc[4][4];
    for (int t = 0; t < OT; t++) for (int r = 0; r < R; r++) acc[t][r] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        for (int t = 0; t < OT; t++) {
            const uint8_t *blk = w + (o + t) * rowBytes + b * SM_Q8_0_BYTES;
            _mm_prefetch((const char *)(blk + OT * rowBytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(blk + OT * rowBytes + 63), _MM_HINT_T0);
            uint16_t dh; memcpy(&dh, blk, 2);
            const float dw = _cvtsh_ss(dh);
            const __m512i wq = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(blk + 2)));
            for (int r = 0; r < R; r++) {
                const __m512i s = _mm512_madd_epi16(wq, _mm512_loadu_si512((const void *)(xq + r * ic + b * SM_Q8_0_BLOCK)));
                acc[t][r] = _mm512_fmadd_ps(_mm512_set1_ps(dw * xd[r * nb + b]), _mm512_cvtepi32_ps(s), acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++)
        for (int r = 0; r < R; r++) store_out(out, ldo, r, o + t, _mm512_reduce_add_ps(acc[t][r]), accumulate);
}
static SM_AVX512 void gemv_q8_0_q16_avx512(const uint8_t *w, const int16_t *xq, const float *xd, size_t n, size_t ic,
                                           size_t o0, size_t o1, float *out, size_t ldo, int accumulate) {
    const size_t nb = ic / SM_Q8_0_BLOCK;
    SM_DRIVE(q8_q16_tile512, (w, xq + r0 * ic, xd + r0 * nb, ic))
}

SM_GEMV_FAMILY(avx512, SM_AVX512, bf16_tile512, q8_f32_tile512, q8_q8_tile512)
#endif

// MARK: - dispatch

void sm_gemv_bf16(const uint16_t *w, const float *xp, size_t n, size_t ic, size_t o0, size_t o1,
                  float *out, size_t ldo, int accumulate) {
#if SM_X86
    if (bf16_wide(ic)) { gemv_bf16_avx512(w, xp, n, ic, o0, o1, out, ldo, accumulate); return; }
    if (sm_quant_simd_level() >= 1) { gemv_bf16_avx2(w, xp, n, ic, o0, o1, out, ldo, accumulate); return; }
#endif
    gemv_bf16_scalar(w, xp, n, ic, o0, o1, out, ldo, accumulate);
}
void sm_gemv_q8_0_f32(const uint8_t *w, const float *x, size_t n, size_t ic, size_t o0, size_t o1,
                      float *out, size_t ldo, int accumulate) {
#if SM_X86
    if (sm_quant_simd_level() >= 2) { gemv_q8_0_f32_avx512(w, x, n, ic, o0, o1, out, ldo, accumulate); return; }
    if (sm_quant_simd_level() >= 1) { gemv_q8_0_f32_avx2(w, x, n, ic, o0, o1, out, ldo, accumulate); return; }
#endif
    gemv_q8_0_f32_scalar(w, x, n, ic, o0, o1, out, ldo, accumulate);
}
void sm_gemv_q8_0_q8(const uint8_t *w, const int8_t *xq, const float *xd, size_t n, size_t ic, size_t o0, size_t o1,
                     float *out, size_t ldo, int accumulate) {
#if SM_X86
    if (sm_quant_simd_level() >= 2) { gemv_q8_0_q8_avx512(w, xq, xd, n, ic, o0, o1, out, ldo, accumulate); return; }
    if (sm_quant_simd_level() >= 1) { gemv_q8_0_q8_avx2(w, xq, xd, n, ic, o0, o1, out, ldo, accumulate); return; }
#endif
    gemv_q8_0_int_scalar(w, xq, NULL, xd, n, ic, o0, o1, out, ldo, accumulate);
}
void sm_gemv_q8_0_q16(const uint8_t *w, const int16_t *xq, const float *xd, size_t n, size_t ic, size_t o0, size_t o1,
                      float *out, size_t ldo, int accumulate) {
#if SM_X86
    if (sm_quant_simd_level() >= 2) { gemv_q8_0_q16_avx512(w, xq, xd, n, ic, o0, o1, out, ldo, accumulate); return; }
    if (sm_quant_simd_level() >= 1) { gemv_q8_0_q16_avx2(w, xq, xd, n, ic, o0, o1, out, ldo, accumulate); return; }
#endif
    gemv_q8_0_int_scalar(w, NULL, xq, xd, n, ic, o0, o1, out, ldo, accumulate);
}
