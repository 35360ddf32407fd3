// See include/CDNNL.h. One CPU engine for the process; one stream per thread; matmul primitives cached by shape,
// transposes, alpha and beta (creating one JIT-compiles a kernel); operands packed into per-thread bf16 buffers.
#include "CDNNL.h"
#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "CQuant.h"

static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_runtime_error;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static void make_engine(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

typedef struct {
    int ta, tb; long m, n, k, ldc; float alpha, beta; dnnl_data_type_t dt;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a_md, b_md, c_md;
} entry_t;

#define CACHE_CAP 256
static entry_t cache[CACHE_CAP];
static int cache_len = 0;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static _Thread_local dnnl_stream_t stream;
static _Thread_local void *buf_a, *buf_b;
static _Thread_local size_t cap_a, cap_b;

/// The matmul of (ta, tb, m, n, k, alpha, beta) on dense bf16 operands (A [m,k] or stored [k,m]; B [k,n] or stored
/// [n,k]) and a row-major fp32 C with leading dimension ldc: built once, then from the cache. NULL on failure (*st set).
static entry_t *primitive_for(int ta, int tb, long m, long n, long k, long ldc, float alpha, float beta,
                              dnnl_data_type_t dt, dnnl_status_t *st, char *info, size_t cap) {
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < cache_len; i++) {
        entry_t *e = &cache[i];
        if (e->ta == ta && e->tb == tb && e->m == m && e->n == n && e->k == k && e->ldc == ldc && e->alpha == alpha && e->beta == beta && e->dt == dt) {
            pthread_mutex_unlock(&cache_lock);
            return e;
        }
    }
    entry_t e = {ta, tb, m, n, k, ldc, alpha, beta, dt, NULL};
    dnnl_dims_t ad = {m, k}, bd = {k, n}, cd = {m, n};
    dnnl_dims_t as = {ta ? 1 : k, ta ? m : 1}, bs = {tb ? 1 : n, tb ? k : 1}, cs = {ldc, 1};
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t md;
    *st = dnnl_memory_desc_init_by_strides(&e.a_md, 2, ad, dt, as);
    if (*st == dnnl_success) *st = dnnl_memory_desc_init_by_strides(&e.b_md, 2, bd, dt, bs);
    if (*st == dnnl_success) *st = dnnl_memory_desc_init_by_strides(&e.c_md, 2, cd, dnnl_f32, cs);
    if (*st == dnnl_success) *st = dnnl_matmul_desc_init(&md, &e.a_md, &e.b_md, NULL, &e.c_md);
    if (*st == dnnl_success) *st = dnnl_primitive_attr_create(&attr);
    if (*st == dnnl_success && alpha != 1.0f) *st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
    if (*st == dnnl_success && beta != 0.0f) {
        *st = dnnl_post_ops_create(&po);
        if (*st == dnnl_success) *st = dnnl_post_ops_append_sum(po, beta);
        if (*st == dnnl_success) *st = dnnl_primitive_attr_set_post_ops(attr, po);
    }
    if (*st == dnnl_success) *st = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL);
    if (*st == dnnl_success && info && cap) {
        const char *name = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name)
            snprintf(info, cap, "%s", name);
    }
    if (*st == dnnl_success) *st = dnnl_primitive_create(&e.prim, pd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    entry_t *out = NULL;
    if (*st == dnnl_success) {
        if (cache_len == CACHE_CAP) {   // full: drop the oldest
            dnnl_primitive_destroy(cache[0].prim);
            memmove(cache, cache + 1, (CACHE_CAP - 1) * sizeof(entry_t));
            cache_len--;
        }
        cache[cache_len] = e;
        out = &cache[cache_len++];
    } else if (info && cap) {
        snprintf(info, cap, "oneDNN refused a bf16 matmul on this CPU (status %d)", (int)*st);
    }
    pthread_mutex_unlock(&cache_lock);
    return out;
}

/// Packs the rows × cols matrix at x (leading dimension ld) densely (ld = cols) into bf16, or copies it as fp32 for
/// the fp32 check; the buffer grows as needed (bytes in *capacity).
static void *pack(const float *x, long rows, long cols, long ld, dnnl_data_type_t dt, void **buf, size_t *capacity) {
    size_t need = (size_t)rows * (size_t)cols * (dt == dnnl_bf16 ? 2 : 4);
    if (need > *capacity) {
        free(*buf);
        *buf = malloc(need);
        *capacity = *buf ? need : 0;
        if (!*buf) return NULL;
    }
    for (long r = 0; r < rows; r++) {
        if (dt == dnnl_bf16) sm_f32_to_bf16(x + r * ld, (size_t)cols, (uint16_t *)*buf + r * cols);
        else memcpy((float *)*buf + r * cols, x + r * ld, (size_t)cols * sizeof(float));
    }
    return *buf;
}

int sm_dnnl_bf16_probe(char *info, size_t cap) {
    if (info && cap) info[0] = 0;
    pthread_once(&engine_once, make_engine);
    if (engine_status != dnnl_success) {
        if (info && cap) snprintf(info, cap, "oneDNN CPU engine not available (status %d)", (int)engine_status);
        return 0;
    }
    dnnl_status_t st;
    return primitive_for(0, 0, 64, 64, 64, 64, 1.0f, 0.0f, dnnl_bf16, &st, info, cap) != NULL;
}

static int gemm(dnnl_data_type_t dt, int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    if (m <= 0 || n <= 0) return 0;
    pthread_once(&engine_once, make_engine);
    if (engine_status != dnnl_success) return (int)engine_status;
    dnnl_status_t st = dnnl_success;
    if (!stream) { st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags); if (st != dnnl_success) return (int)st; }
    entry_t *e = primitive_for(trans_a != 0, trans_b != 0, m, n, k, ldc, alpha, beta, dt, &st, NULL, 0);
    if (!e) return (int)st;
    // Stored shapes: A [m, k] or [k, m]; B [k, n] or [n, k].
    void *pa = trans_a ? pack(a, k, m, lda, dt, &buf_a, &cap_a) : pack(a, m, k, lda, dt, &buf_a, &cap_a);
    void *pb = trans_b ? pack(b, n, k, ldb, dt, &buf_b, &cap_b) : pack(b, k, n, ldb, dt, &buf_b, &cap_b);
    if (!pa || !pb) return (int)dnnl_out_of_memory;
    // C is written in place through its strided descriptor (rows ldc floats apart).
    float *cd = c;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL;
    st = dnnl_memory_create(&ma, &e->a_md, engine, pa);
    if (st == dnnl_success) st = dnnl_memory_create(&mb, &e->b_md, engine, pb);
    if (st == dnnl_success) st = dnnl_memory_create(&mc, &e->c_md, engine, cd);
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        st = dnnl_primitive_execute(e->prim, stream, 3, args);
        if (st == dnnl_success) st = dnnl_stream_wait(stream);
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    return (int)st;
}

int sm_dnnl_gemm_bf16(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                      const float *b, long ldb, float beta, float *c, long ldc) {
    return gemm(dnnl_bf16, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int sm_dnnl_gemm_f32_check(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                           const float *b, long ldb, float beta, float *c, long ldc) {
    return gemm(dnnl_f32, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
