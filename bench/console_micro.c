/* bench/console_micro.c: what a console page costs the server, in ms of
 * CPU, for the size: 100 keys with budgets, 20 members with
 * health, 50 models with traffic. Each page is what the handler does: the
 * status model (the keys, the members' health and the counters from the
 * shared tables; the balancers and routes as the glue adds them) and its
 * rendering (HTML of each page, XML, JSON, Prometheus text). Build: make
 * bench/console_micro; run: bench/console_micro [iterations]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "llmgw_metrics.h"
#include "llmgw_render.h"
#include "llmgw_status.h"

#define T0 (APR_INT64_C(1767225600) * APR_USEC_PER_SEC)
#define KEYS 100
#define MEMBERS 20
#define MODELS 50

static double cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static llmgw_limits_t *keys_table(apr_pool_t *p)
{
    apr_size_t size = llmgw_limits_size(KEYS + 8, 64);
    llmgw_limits_t *t =
        llmgw_limits_init(apr_pcalloc(p, size), size, KEYS + 8, 64, 0);
    llmgw_limits_def_t defs[KEYS];
    int i;

    memset(defs, 0, sizeof(defs));
    for (i = 0; i < KEYS; i++) {
        defs[i].name = apr_psprintf(p, "key:team-%03d", i);
        defs[i].conf.rpm = 600;
        defs[i].conf.tpm = 200000;
        defs[i].conf.budget[0].unit = LLMGW_BUDGET_TOKENS;
        defs[i].conf.budget[0].per = LLMGW_PER_DAY;
        defs[i].conf.budget[0].limit = 2000000;
    }
    if (!t || llmgw_limits_configure(t, defs, KEYS, NULL, T0) != APR_SUCCESS) {
        fprintf(stderr, "cannot make the keys table\n");
        exit(1);
    }
    return t;
}

static llmgw_health_t *health_table(apr_pool_t *p)
{
    apr_size_t size = llmgw_health_size(MEMBERS);
    llmgw_health_t *h =
        llmgw_health_init(apr_pcalloc(p, size), size, MEMBERS, T0);
    int i;

    for (i = 0; i < MEMBERS; i++) {
        llmgw_health_add(h, apr_psprintf(p, "http://10.0.0.%d:11434", i + 1));
        llmgw_health_hint(h, i, "llama3:8b", LLMGW_HINT_SERVED, T0);
    }
    return h;
}

static llmgw_metrics_t *counters(apr_pool_t *p)
{
    apr_size_t size = llmgw_metrics_size();
    llmgw_metrics_t *m = llmgw_metrics_init(apr_pcalloc(p, size), size, T0);
    int i;

    for (i = 0; i < 20000; i++) {
        llmgw_metrics_obs_t o;

        memset(&o, 0, sizeof(o));
        o.route = "llama*";
        o.model = apr_psprintf(p, "llama-%d", i % MODELS);
        o.balancer = "balancer://gpu";
        o.member = apr_psprintf(p, "http://10.0.0.%d:11434", i % MEMBERS + 1);
        o.status = i % 50 ? 200 : 429;
        o.prompt = 20;
        o.completion = 100;
        o.duration = 200000 + i % 1000 * 1000;
        o.ttft = i % 2 ? 40000 : -1;
        o.cache = i % 4 ? LLMGW_CR_MISS : LLMGW_CR_HIT;
        llmgw_metrics_record(m, &o, T0 + (apr_time_t)i * 6000);
    }
    return m;
}

/* What the glue adds from mod_proxy and the routes. */
static void glue_parts(json_object *st, const llmgw_health_t *h,
                       const llmgw_metrics_t *m, apr_time_t now)
{
    json_object *bals = json_object_new_array(), *b = json_object_new_object();
    json_object *members = json_object_new_array();
    json_object *routes = json_object_new_array(), *r, *pats;
    char name[64];
    int i;

    json_object_object_add(b, "name",
                           json_object_new_string("balancer://gpu"));
    json_object_object_add(b, "lbmethod",
                           json_object_new_string("byrequests"));
    for (i = 0; i < MEMBERS; i++) {
        json_object *o = json_object_new_object();
        llmgw_metrics_series_t s;

        snprintf(name, sizeof(name), "http://10.0.0.%d:11434", i + 1);
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "status",
                               json_object_new_string("Init Ok "));
        json_object_object_add(o, "usable", json_object_new_boolean(1));
        json_object_object_add(o, "drained", json_object_new_boolean(0));
        json_object_object_add(o, "disabled", json_object_new_boolean(0));
        json_object_object_add(o, "busy", json_object_new_int(0));
        if (llmgw_metrics_find(m, LLMGW_MT_MEMBERS, "balancer://gpu", name,
                               &s)) {
            json_object_object_add(o, "traffic",
                                   llmgw_metrics_counts_json(&s.c));
        }
        llmgw_status_member_health(o, h, name, now);
        json_object_array_add(members, o);
    }
    json_object_object_add(b, "members", members);
    json_object_array_add(bals, b);
    json_object_object_add(st, "balancers", bals);
    r = json_object_new_object();
    pats = json_object_new_array();
    json_object_array_add(pats, json_object_new_string("llama*"));
    json_object_object_add(r, "name", json_object_new_string("llama*"));
    json_object_object_add(r, "patterns", pats);
    json_object_array_add(routes, r);
    json_object_object_add(st, "routes", routes);
}

static json_object *model(llmgw_limits_t *t, const llmgw_health_t *h,
                          const llmgw_metrics_t *m, apr_time_t now)
{
    json_object *st = json_object_new_object();

    llmgw_metrics_json(m, now, 120, st);
    glue_parts(st, h, m, now);
    llmgw_status_keys(st, t, now);
    return st;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50, i, pg;
    llmgw_render_opts_t opts = { "/llm-admin/", "0123", NULL };
    apr_time_t now = T0 + apr_time_from_sec(120);
    apr_pool_t *p, *scratch;
    llmgw_limits_t *t;
    llmgw_health_t *h;
    llmgw_metrics_t *m;
    double t0, worst = 0;
    apr_size_t len = 0;

    apr_initialize();
    apr_pool_create(&p, NULL);
    apr_pool_create(&scratch, p);
    t = keys_table(p);
    h = health_table(p);
    m = counters(p);
    printf("console page, server side, %d keys, %d members, %d models "
           "(CPU ms, mean of %d):\n",
           KEYS, MEMBERS, MODELS, n);
    for (pg = 0; pg < LLMGW_PAGE_N + 3; pg++) {
        t0 = cpu_ms();
        for (i = 0; i < n; i++) {
            json_object *st = model(t, h, m, now);
            llmgw_pbuf_t b = { 0 };

            if (pg < LLMGW_PAGE_N) {
                llmgw_render_html(scratch, st, (llmgw_page_t)pg, &opts, &len);
            }
            else if (pg == LLMGW_PAGE_N) {
                llmgw_render_xml(scratch, st, &len);
            }
            else if (pg == LLMGW_PAGE_N + 1) {
                json_object_to_json_string_length(st, JSON_C_TO_STRING_PLAIN,
                                                  &len);
            }
            else {
                llmgw_metrics_prom(m, scratch, &b);
                llmgw_status_keys_prom(t, scratch, &b, now);
                len = b.len;
            }
            json_object_put(st);
            apr_pool_clear(scratch);
        }
        t0 = (cpu_ms() - t0) / n;
        worst = t0 > worst ? t0 : worst;
        printf("  %-12s %7.2f ms  (%zu bytes)\n",
               pg < LLMGW_PAGE_N
                   ? (*llmgw_render_page_path((llmgw_page_t)pg)
                          ? llmgw_render_page_path((llmgw_page_t)pg)
                          : "overview")
               : pg == LLMGW_PAGE_N     ? "status.xml"
               : pg == LLMGW_PAGE_N + 1 ? "status.json"
                                        : "metrics",
               t0, (size_t)len);
    }
    printf("slowest: %.2f ms (the issue's bound: 50 ms)\n", worst);
    apr_pool_destroy(p);
    apr_terminate();
    return 0;
}
