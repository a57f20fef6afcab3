/* llmgw_conf: the values directives take, each parsed one way, with one
 * error format: "WHAT: 'VALUE' is not KIND; e.g. EXAMPLE". httpd puts the
 * file and line before a directive's error. */
#ifndef LLMGW_CONF_H
#define LLMGW_CONF_H

#include <apr_pools.h>
#include <apr_time.h>

/* Each returns NULL and sets *out, or the error (from p). what names the
 * directive (and option: "LLMCache ttl"), example a whole good use of it
 * ("LLMMaxRequestBody 8M"). */

/* A size: bytes, or a number with K, M or G (1024-based), in [min, max]. */
const char *llmgw_conf_size(apr_pool_t *p, const char *what, const char *arg,
                            apr_off_t min, apr_off_t max, const char *example,
                            apr_off_t *out);
/* A whole number in [min, max] (decimal digits, an optional '-'). */
const char *llmgw_conf_int(apr_pool_t *p, const char *what, const char *arg,
                           apr_int64_t min, apr_int64_t max,
                           const char *example, apr_int64_t *out);
/* Whole seconds in [min, max], as a time interval. */
const char *llmgw_conf_seconds(apr_pool_t *p, const char *what,
                               const char *arg, apr_int64_t min,
                               apr_int64_t max, const char *example,
                               apr_interval_time_t *out);
/* Whole milliseconds in [min, max], as a time interval. */
const char *llmgw_conf_msec(apr_pool_t *p, const char *what, const char *arg,
                            apr_int64_t min, apr_int64_t max,
                            const char *example, apr_interval_time_t *out);
/* One of names (NULL-terminated, any case): *out its index. */
const char *llmgw_conf_keyword(apr_pool_t *p, const char *what,
                               const char *arg, const char *const *names,
                               int *out);
/* on or off. */
const char *llmgw_conf_flag(apr_pool_t *p, const char *what, const char *arg,
                            int *out);
/* NAME=VALUE, NAME one of names (NULL-terminated, any case): *which its
 * index, *value what follows the '='. */
const char *llmgw_conf_option(apr_pool_t *p, const char *what, const char *arg,
                              const char *const *names, int *which,
                              const char **value);

#endif
