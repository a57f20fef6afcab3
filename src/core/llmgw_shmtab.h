/* llmgw_shmtab: a key-value table laid out in one block of memory (shared
 * between processes by the caller, who also locks it): a ring of records,
 * the oldest overwritten first, and a hash index into it. Every operation
 * is a few probes and one copy, whatever the number of entries. */
#ifndef LLMGW_SHMTAB_H
#define LLMGW_SHMTAB_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct llmgw_shmtab llmgw_shmtab_t;

/* Lays a table out in mem (size bytes, 8-byte aligned, already zeroed, as
 * fresh shared memory is), with an index entry for every avg_item bytes of
 * ring. NULL if size is too small for that. */
llmgw_shmtab_t *llmgw_shmtab_init(void *mem, apr_size_t size,
                                  apr_size_t avg_item);

/* The largest value (with its key) the table takes. */
apr_size_t llmgw_shmtab_max_item(const llmgw_shmtab_t *t, apr_size_t klen);

/* APR_NOTFOUND if absent or expired at 'now'; else a copy in p. */
apr_status_t llmgw_shmtab_get(llmgw_shmtab_t *t, const char *key,
                              apr_size_t klen, apr_time_t now, apr_pool_t *p,
                              char **val, apr_size_t *len);
/* The same without the caller's lock: safe beside a writer (a record
 * overwritten while it is read counts as absent). Changes nothing. */
apr_status_t llmgw_shmtab_peek(llmgw_shmtab_t *t, const char *key,
                               apr_size_t klen, apr_time_t now, apr_pool_t *p,
                               char **val, apr_size_t *len);
/* Stores (or replaces) key until 'expiry'; APR_ENOSPC if it is larger
 * than llmgw_shmtab_max_item. Makes room by dropping the oldest. */
apr_status_t llmgw_shmtab_set(llmgw_shmtab_t *t, const char *key,
                              apr_size_t klen, const char *val, apr_size_t len,
                              apr_time_t expiry);
/* APR_NOTFOUND if there was nothing to remove. */
apr_status_t llmgw_shmtab_del(llmgw_shmtab_t *t, const char *key,
                              apr_size_t klen);

/* Live entries (expired ones still count until found or replaced). */
apr_size_t llmgw_shmtab_count(const llmgw_shmtab_t *t);

/* The hash a key is filed under: probing starts at slot hash % slots, and a
 * slot keeps the upper 32 bits to skip most key compares. Exposed so that
 * tests can make keys collide. */
apr_uint64_t llmgw_shmtab_hash(const char *key, apr_size_t klen);

#endif
