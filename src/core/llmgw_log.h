/* llmgw_log: the core's log lines, written by whoever embeds it: the httpd
 * glue sends them to httpd's error log (mod_md's md_log_set, in spirit). */
#ifndef LLMGW_LOG_H
#define LLMGW_LOG_H

#include <apr_pools.h>

/* Our own log tags, in the spirit of httpd's APLOGNO: "LLMGW0301: ". */
#define LLMGW_LOGNO(n) "LLMGW" #n ": "

/* The levels, with syslog's (and httpd's APLOG_*) numbers. */
#define LLMGW_LOG_ERR 3
#define LLMGW_LOG_WARNING 4
#define LLMGW_LOG_NOTICE 5
#define LLMGW_LOG_INFO 6
#define LLMGW_LOG_DEBUG 7

/* p is the pool of the work a line is about (a request's pool, say): the
 * embedder may tell by it whose line it is. */
typedef int llmgw_log_enabled_fn(apr_pool_t *p, int level);
typedef void llmgw_log_write_fn(apr_pool_t *p, const char *file, int line,
                                int level, apr_status_t rv, const char *msg);

/* Where lines go; without it (unit tests), nowhere. */
void llmgw_log_set(llmgw_log_enabled_fn *enabled, llmgw_log_write_fn *write);

void llmgw_log_(apr_pool_t *p, const char *file, int line, int level,
                apr_status_t rv, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* LLMGW_LOG(p, LLMGW_LOG_WARNING, rv, LLMGW_LOGNO(0203) "...", ...) */
#define LLMGW_LOG(p, level, rv, ...) \
    llmgw_log_((p), __FILE__, __LINE__, (level), (rv), __VA_ARGS__)

#endif
