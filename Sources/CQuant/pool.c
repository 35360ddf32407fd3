// A small fork-join pool for the decode products (see include/CQuant.h, sm_pool_run). Workers are persistent
// pthreads that spin on a job generation counter between jobs (so the ~33 products of one decode token cost a few
// hundred nanoseconds of hand-off each instead of a thread wake-up), and sleep on a condition variable once they have
// seen no job for SM_POOL_SPIN_NS. Same idea as llama.cpp's ggml thread pool (spin, then block), written for this
// call pattern: one caller at a time, the caller runs part 0 itself.
#define _GNU_SOURCE
#include "CQuant.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define SM_PAUSE() __asm__ __volatile__("yield")
#else
#define SM_PAUSE() ((void)0)
#endif

#define SM_POOL_MAX 64

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   // one job at a time
static pthread_mutex_t sleep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sleep_cv = PTHREAD_COND_INITIALIZER;
static _Atomic uint64_t generation = 0;     // bumped once per job
static _Atomic int pending = 0;             // started workers that have not finished the current job
static _Atomic int sleepers = 0;
static int started = 0;                     // workers 1...started exist (guarded by run_lock)
static sm_pool_fn job_fn;
static void *job_ctx;
static int job_parts;
static long spin_ns = -1;
static _Thread_local int in_job = 0;        // a call from inside a part runs inline

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t start_generation[SM_POOL_MAX];   // the generation each worker was created at (guarded by run_lock)

static void *worker_main(void *arg) {
    const int index = (int)(intptr_t)arg;
    // Jobs after the one current at creation are this worker's (reading `generation` here instead could skip the
    // job that its creator is about to publish).
    uint64_t seen = start_generation[index];
    for (;;) {
        uint64_t g = atomic_load_explicit(&generation, memory_order_acquire);
        if (g == seen) {
            const uint64_t t0 = now_ns();
            unsigned spins = 0;
            while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
                SM_PAUSE();
                if ((++spins & 255u) != 0) continue;
                sched_yield();                                 // lets a descheduled peer run when CPUs are oversubscribed
                if (now_ns() - t0 > (uint64_t)spin_ns) {
                    pthread_mutex_lock(&sleep_mu);
                    atomic_fetch_add(&sleepers, 1);           // seq_cst: the caller's bump and this cannot both be missed
                    while ((g = atomic_load(&generation)) == seen) pthread_cond_wait(&sleep_cv, &sleep_mu);
                    atomic_fetch_sub(&sleepers, 1);
                    pthread_mutex_unlock(&sleep_mu);
                    break;
                }
            }
        }
        seen = g;
        if (index < job_parts) {
            in_job = 1;
            job_fn(job_ctx, index, job_parts);
            in_job = 0;
        }
        atomic_fetch_sub_explicit(&pending, 1, memory_order_release);
    }
    return NULL;
}

int sm_pool_run(int parts, sm_pool_fn fn, void *ctx) {
    static long cpus = 0;                                   // spinning threads beyond the CPUs only wait for each other
    if (cpus == 0) {                                        // the CPUs this process may run on (taskset, cgroups)
#ifdef CPU_COUNT
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
#endif
        if (cpus < 1) cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1) cpus = 1;
    }
    if (parts > cpus) parts = (int)cpus;
    if (parts > SM_POOL_MAX) parts = SM_POOL_MAX;
    if (parts <= 1 || in_job || pthread_mutex_trylock(&run_lock) != 0) {
        // One part, a nested call, or another thread's job in flight: run every part here, in order.
        if (parts < 1) parts = 1;
        for (int p = 0; p < parts; p++) fn(ctx, p, parts);
        return parts;
    }
    if (spin_ns < 0) {
        const char *s = getenv("SWIFTMIND_POOL_SPIN_US");
        long us = s && s[0] ? atol(s) : 1000;
        spin_ns = (us < 0 ? 0 : us) * 1000;
    }
    while (started < parts - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_generation[started + 1] = atomic_load(&generation);
        const int ok = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)(started + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        started++;
    }
    if (started < parts - 1) parts = started + 1;
    job_fn = fn; job_ctx = ctx; job_parts = parts;
    atomic_store(&pending, started);
    atomic_fetch_add(&generation, 1);                      // seq_cst: publishes the job
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_mu);
        pthread_cond_broadcast(&sleep_cv);
        pthread_mutex_unlock(&sleep_mu);
    }
    in_job = 1;
    fn(ctx, 0, parts);
    in_job = 0;
    for (unsigned spins = 1; atomic_load_explicit(&pending, memory_order_acquire) > 0; spins++) {
        SM_PAUSE();
        if ((spins & 255u) == 0) sched_yield();
    }
    pthread_mutex_unlock(&run_lock);
    return parts;
}
