/* llmgw_prom: reads Prometheus text (exposition format 0.0.4), as vLLM's
 * /metrics serves it, one sample at a time and without a copy. */
#ifndef LLMGW_PROM_H
#define LLMGW_PROM_H

#include <apr_pools.h>

/* Labels a sample may have; a line with more is refused. */
#define LLMGW_PROM_MAX_LABELS 64

/* One sample. Names and label values point into the text; a label
 * value with escapes points to its unescaped copy in the pool. None is
 * NUL-terminated. */
typedef struct {
    const char *name;
    apr_size_t name_len;
    int nlabels;
    const char *label_name[LLMGW_PROM_MAX_LABELS];
    apr_size_t label_name_len[LLMGW_PROM_MAX_LABELS];
    const char *label_value[LLMGW_PROM_MAX_LABELS];
    apr_size_t label_value_len[LLMGW_PROM_MAX_LABELS];
    double value; /* may be NaN or infinite */
} llmgw_prom_sample_t;

/* Reads the next sample from *pos (up to end), skipping blank lines and
 * comments (# HELP, # TYPE and any other). 1: a sample, *pos past its
 * line; 0: the end; -1: a malformed line (*pos at it). */
int llmgw_prom_next(apr_pool_t *p, const char **pos, const char *end,
                    llmgw_prom_sample_t *s);

#endif
