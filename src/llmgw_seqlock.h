/* llmgw_seqlock: a sequence counter for data with one writer and readers
 * in any process that must never wait: the writer makes the counter odd,
 * writes, makes it even again; a reader keeps its copy only if the
 * counter was even before and unchanged after. */
#ifndef LLMGW_SEQLOCK_H
#define LLMGW_SEQLOCK_H

#include <apr.h>

/* Starts a write. A counter left odd by a writer that died half-way
 * stays odd, and the next write_end makes it even. */
static APR_INLINE void llmgw_seq_write_begin(apr_uint32_t *seq)
{
    apr_uint32_t s = __atomic_load_n(seq, __ATOMIC_RELAXED);

    __atomic_store_n(seq, s | 1, __ATOMIC_RELAXED);
    /* The data written next must not be seen before the odd counter. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static APR_INLINE void llmgw_seq_write_end(apr_uint32_t *seq)
{
    apr_uint32_t s = __atomic_load_n(seq, __ATOMIC_RELAXED);

    __atomic_store_n(seq, (s | 1) + 1, __ATOMIC_RELEASE);
}

/* 1 and *s if a read may start (no write under way), else 0. */
static APR_INLINE int llmgw_seq_read_begin(const apr_uint32_t *seq,
                                           apr_uint32_t *s)
{
    *s = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
    return !(*s & 1);
}

/* 1 if what was copied since read_begin gave s is whole. */
static APR_INLINE int llmgw_seq_read_end(const apr_uint32_t *seq,
                                         apr_uint32_t s)
{
    /* The copy's loads must be done before the counter is looked at. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(seq, __ATOMIC_RELAXED) == s;
}

#endif
