/* mod_llmgw_store: an shm store's segment is anonymous shared memory made
 * in post_config (the children inherit it; a restart starts afresh), its
 * locks are httpd's global mutexes (so the Mutex directive applies). */
#include <httpd.h>
#include <http_log.h>
#include <ap_mpm.h>
#include <util_mutex.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "mod_llmgw.h"
#include "mod_llmgw_store.h"

APLOG_USE_MODULE(llm_gateway);

apr_status_t llmgw_store_pre_config(apr_pool_t *pconf)
{
    return ap_mutex_register(pconf, LLMGW_STORE_MUTEX, NULL, APR_LOCK_DEFAULT,
                             0);
}

apr_status_t llmgw_store_post_config(llmgw_store_t *st, apr_pool_t *pconf,
                                     apr_pool_t *ptemp, server_rec *s)
{
    int n = llmgw_store_shards(st), i;
    apr_size_t bytes = llmgw_store_shm_bytes(st);
    apr_global_mutex_t **mutexes;
    apr_shm_t *shm;
    const char *err;
    apr_status_t rv;

    if (!n) {
        return APR_SUCCESS;
    }
    rv = apr_shm_create(&shm, bytes, NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(
            APLOG_MARK, APLOG_ERR, rv, s,
            LLMGW_LOGNO(0202) "LLMCache shm: cannot get %" APR_SIZE_T_FMT
                              " bytes of "
                              "shared memory",
            bytes);
        return rv;
    }
    mutexes = apr_pcalloc(ptemp, n * sizeof(*mutexes));
    for (i = 0; i < n; i++) {
        rv = ap_global_mutex_create(&mutexes[i], NULL, LLMGW_STORE_MUTEX,
                                    apr_itoa(ptemp, i), s, pconf, 0);
        if (rv != APR_SUCCESS) {
            return rv;
        }
    }
    err =
        llmgw_store_shm_attach(st, pconf, apr_shm_baseaddr_get(shm), mutexes);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, LLMGW_LOGNO(0204) "%s", err);
        return APR_ENOSPC;
    }
    return APR_SUCCESS;
}

apr_status_t llmgw_store_child(llmgw_store_t *st, apr_pool_t *pchild,
                               server_rec *s)
{
    int threads = 1;
    apr_status_t rv;

    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    rv = llmgw_store_child_init(st, pchild, threads);
    if (rv != APR_SUCCESS) {
        ap_log_error(
            APLOG_MARK, APLOG_ERR, rv, s,
            LLMGW_LOGNO(
                0003) "cache store %s unusable in this child; requests go "
                      "to the backends",
            st->ops->name);
    }
    return rv;
}
