/* llmgw_log: formats a line only when its level is wanted, then hands it
 * to the embedder's writer. */
#include <stdarg.h>

#include <apr_strings.h>

#include "llmgw_log.h"

static llmgw_log_enabled_fn *log_enabled;
static llmgw_log_write_fn *log_write;

void llmgw_log_set(llmgw_log_enabled_fn *enabled, llmgw_log_write_fn *write)
{
    log_enabled = enabled;
    log_write = write;
}

void llmgw_log_(apr_pool_t *p, const char *file, int line, int level,
                apr_status_t rv, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_write || (log_enabled && !log_enabled(p, level))) {
        return;
    }
    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(p, file, line, level, rv, msg);
}
