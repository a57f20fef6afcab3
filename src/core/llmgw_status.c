/* llmgw_status: the keys and health views of the status model, read from
 * the shared tables with their own readers (usage iteration, member
 * views): nothing here takes a lock of its own. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_metrics.h"
#include "llmgw_status.h"

static const char *const periods[] = { "", "hour", "day", "month" };
static const char *const refusals[LLMGW_LIMIT_NKINDS] = {
    "", "rpm", "tpm", "concurrent", "budget_tokens", "budget_cost"
};

static const char *period_name(int per)
{
    return per >= LLMGW_PER_HOUR && per <= LLMGW_PER_MONTH ? periods[per]
                                                           : "none";
}

/* The subject's kind and shown name, from its table name ("key:A"). */
static const char *subject_kind(apr_pool_t *p, const char *name,
                                const char **shown)
{
    const char *colon = strchr(name, ':');
    const char *hash = strchr(name, '#');

    if (colon && (!hash || colon < hash)) {
        *shown = colon + 1;
        return apr_pstrmemdup(p, name, (apr_size_t)(colon - name));
    }
    /* A name too long or odd is kept as "<kind>#<sha256>". */
    *shown = name;
    return hash ? apr_pstrmemdup(p, name, (apr_size_t)(hash - name)) : "";
}

static json_object *budget_json(const llmgw_limits_usage_t *u, int i)
{
    json_object *o = json_object_new_object();

    json_object_object_add(
        o, "unit",
        json_object_new_string(
            u->conf.budget[i].unit == LLMGW_BUDGET_COST ? "cost" : "tokens"));
    json_object_object_add(
        o, "period",
        json_object_new_string(period_name(u->conf.budget[i].per)));
    json_object_object_add(o, "limit",
                           json_object_new_int64(u->conf.budget[i].limit));
    json_object_object_add(
        o, "used",
        json_object_new_int64(u->budget[i].used + u->budget[i].remote));
    json_object_object_add(o, "reserved",
                           json_object_new_int64(u->budget[i].reserved));
    json_object_object_add(o, "remaining",
                           json_object_new_int64(u->budget[i].remaining));
    json_object_object_add(
        o, "resets", json_object_new_int64(apr_time_sec(u->budget[i].reset)));
    json_object_object_add(o, "previous",
                           json_object_new_int64(u->budget[i].prev_used));
    return o;
}

static json_object *rate_json(apr_int64_t limit, apr_int64_t remaining)
{
    json_object *o;

    if (!limit) {
        return json_object_new_null();
    }
    o = json_object_new_object();
    json_object_object_add(o, "limit", json_object_new_int64(limit));
    json_object_object_add(o, "remaining", json_object_new_int64(remaining));
    return o;
}

static json_object *usage_json(apr_pool_t *p, const llmgw_limits_usage_t *u)
{
    json_object *o = json_object_new_object(), *b, *ref;
    const char *shown, *kind = subject_kind(p, u->name, &shown);
    apr_int64_t refused = 0;
    int i;

    json_object_object_add(o, "subject", json_object_new_string(u->name));
    json_object_object_add(o, "kind", json_object_new_string(kind));
    json_object_object_add(o, "name", json_object_new_string(shown));
    json_object_object_add(o, "dynamic", json_object_new_boolean(u->dynamic));
    json_object_object_add(o, "retired", json_object_new_boolean(u->retired));
    json_object_object_add(o, "inflight", json_object_new_int64(u->inflight));
    json_object_object_add(o, "rpm", rate_json(u->conf.rpm, u->rpm_remaining));
    json_object_object_add(o, "tpm", rate_json(u->conf.tpm, u->tpm_remaining));
    json_object_object_add(
        o, "concurrent",
        rate_json(u->conf.concurrent, u->conf.concurrent - u->inflight));
    b = json_object_new_array();
    for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
        if (u->conf.budget[i].unit) {
            json_object_array_add(b, budget_json(u, i));
        }
    }
    json_object_object_add(o, "budgets", b);
    ref = json_object_new_object();
    for (i = 1; i < LLMGW_LIMIT_NKINDS; i++) {
        json_object_object_add(ref, refusals[i],
                               json_object_new_int64(u->refused[i]));
        refused += u->refused[i];
    }
    json_object_object_add(o, "refused", ref);
    json_object_object_add(o, "ratelimited", json_object_new_int64(refused));
    json_object_object_add(o, "requests", json_object_new_int64(u->requests));
    json_object_object_add(o, "prompt_tokens",
                           json_object_new_int64(u->prompt_tokens));
    json_object_object_add(o, "completion_tokens",
                           json_object_new_int64(u->completion_tokens));
    json_object_object_add(o, "cost", json_object_new_int64(u->cost));
    return o;
}

void llmgw_status_keys(json_object *status, llmgw_limits_t *t, apr_time_t now)
{
    json_object *arr;
    llmgw_limits_usage_t u;
    apr_uint32_t cursor = 0;
    apr_pool_t *p;

    if (!t) {
        json_object_object_add(status, "keys", json_object_new_null());
        return;
    }
    arr = json_object_new_array();
    apr_pool_create(&p, NULL);
    while (llmgw_limits_usage_next(t, &cursor, now, &u) == APR_SUCCESS) {
        json_object_array_add(arr, usage_json(p, &u));
        apr_pool_clear(p);
    }
    apr_pool_destroy(p);
    json_object_object_add(status, "keys", arr);
}

/* ---------------------------------------------------------------------
 * Prometheus
 */

enum { K_USED, K_RESERVED, K_LIMIT, K_RATELIMITED, K_N };

static void keys_family(llmgw_limits_t *t, apr_pool_t *p, llmgw_pbuf_t *b,
                        apr_time_t now, int fam)
{
    static const struct {
        const char *name, *type, *help;
    } fams[K_N] = {
        { "llmgw_budget_used_tokens", "gauge",
          "Tokens a key's budget used this period (all nodes)." },
        { "llmgw_budget_reserved_tokens", "gauge",
          "Tokens a key's budget holds for requests in flight." },
        { "llmgw_budget_limit_tokens", "gauge",
          "A key's token budget for the period." },
        { "llmgw_ratelimited_total", "counter",
          "Requests of a key refused with a 429." },
    };
    static const char *const labels[] = { "key", "period" };
    llmgw_limits_usage_t u;
    apr_uint32_t cursor = 0;
    int i;

    llmgw_prom_family(p, b, fams[fam].name, fams[fam].type, fams[fam].help);
    while (llmgw_limits_usage_next(t, &cursor, now, &u) == APR_SUCCESS) {
        const char *v[2];
        const char *kind = subject_kind(p, u.name, &v[0]);
        apr_int64_t n = 0;

        if (strcmp(kind, "key") != 0) {
            continue;
        }
        if (fam == K_RATELIMITED) {
            for (i = 1; i < LLMGW_LIMIT_NKINDS; i++) {
                n += u.refused[i];
            }
            llmgw_prom_sample(p, b, fams[fam].name, 1, labels, v, (double)n);
            continue;
        }
        for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
            if (u.conf.budget[i].unit != LLMGW_BUDGET_TOKENS) {
                continue;
            }
            v[1] = period_name(u.conf.budget[i].per);
            n = fam == K_USED       ? u.budget[i].used + u.budget[i].remote
                : fam == K_RESERVED ? u.budget[i].reserved
                                    : u.conf.budget[i].limit;
            llmgw_prom_sample(p, b, fams[fam].name, 2, labels, v, (double)n);
        }
    }
}

void llmgw_status_keys_prom(llmgw_limits_t *t, apr_pool_t *p, llmgw_pbuf_t *b,
                            apr_time_t now)
{
    int fam;

    for (fam = 0; t && fam < K_N; fam++) {
        keys_family(t, p, b, now, fam);
    }
}

/* ---------------------------------------------------------------------
 * Health
 */

static json_object *count_or_null(apr_int64_t v)
{
    return v < 0 ? json_object_new_null() : json_object_new_int64(v);
}

static json_object *models_json(const llmgw_health_t *h, int m)
{
    llmgw_health_model_t models[LLMGW_HEALTH_MODELS];
    json_object *arr = json_object_new_array();
    int n = llmgw_health_models(h, m, models, LLMGW_HEALTH_MODELS), i;

    for (i = 0; i < n; i++) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "name",
                               json_object_new_string(models[i].name));
        json_object_object_add(
            o, "loaded",
            json_object_new_boolean(models[i].flags & LLMGW_PM_LOADED));
        json_object_object_add(
            o, "loading",
            json_object_new_boolean(models[i].flags & LLMGW_PM_LOADING));
        json_object_object_add(
            o, "served",
            json_object_new_boolean(models[i].flags & LLMGW_HM_SERVED));
        json_object_array_add(arr, o);
    }
    return arr;
}

void llmgw_status_member_health(json_object *member, const llmgw_health_t *h,
                                const char *name, apr_time_t now)
{
    llmgw_health_params_t hp;
    llmgw_member_view_t v;
    json_object *o;
    int m = h && name ? llmgw_health_find(h, name) : -1;

    llmgw_health_params_default(&hp);
    if (m < 0 || llmgw_health_member(h, m, now, &hp, &v) != 0) {
        json_object_object_add(member, "health", json_object_new_null());
        return;
    }
    o = json_object_new_object();
    json_object_object_add(o, "state",
                           json_object_new_string(llmgw_hstate_name(v.state)));
    json_object_object_add(
        o, "circuit", json_object_new_string(llmgw_br_state_name(v.br_state)));
    json_object_object_add(o, "inflight", json_object_new_int64(v.inflight));
    json_object_object_add(o, "waiting", json_object_new_int64(v.waiters));
    json_object_object_add(o, "slots_total", count_or_null(v.slots_total));
    json_object_object_add(o, "slots_busy", count_or_null(v.slots_busy));
    json_object_object_add(
        o, "last_probe",
        v.probed_at ? json_object_new_int64(apr_time_sec(v.probed_at))
                    : json_object_new_null());
    json_object_object_add(
        o, "probe_state",
        json_object_new_string(llmgw_hstate_name(v.probe_state)));
    json_object_object_add(o, "models", models_json(h, m));
    json_object_object_add(member, "health", o);
}
