/* test_metrics.c: the shared counters (series by route and model and by
 * member, what does not fit, statuses, the per-second ring and its
 * windows, quantiles, exact counts from several processes at once, kept
 * across an attach), their Prometheus text read back with the core's own
 * reader, and the status model's keys and health views. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_strings.h>

#include "llmgw_metrics.h"
#include "llmgw_prom.h"
#include "llmgw_status.h"
#include "test_core.h"

/* 2026-01-01T00:00:00Z */
#define T0 (APR_INT64_C(1767225600) * APR_USEC_PER_SEC)
#define SEC APR_USEC_PER_SEC
#define MS 1000

static llmgw_metrics_t *fresh(apr_time_t now)
{
    apr_size_t size = llmgw_metrics_size();
    void *mem = apr_palloc(test_pool, size);
    llmgw_metrics_t *m;

    memset(mem, 0x5a, size); /* init takes any content */
    m = llmgw_metrics_init(mem, size, now);
    ck_assert_ptr_nonnull(m);
    return m;
}

static llmgw_metrics_obs_t obs(const char *route, const char *model,
                               int status, apr_int64_t prompt,
                               apr_int64_t completion)
{
    return (llmgw_metrics_obs_t){ .route = route,
                                  .model = model,
                                  .status = status,
                                  .prompt = prompt,
                                  .completion = completion,
                                  .duration = 30 * MS,
                                  .ttft = -1 };
}

static llmgw_metrics_series_t found(llmgw_metrics_t *m, int table,
                                    const char *a, const char *b)
{
    llmgw_metrics_series_t s;

    ck_assert_msg(llmgw_metrics_find(m, table, a, b, &s), "no series %s %s", a,
                  b);
    return s;
}

static apr_uint64_t status_count(const llmgw_metrics_series_t *s, int status)
{
    int i;

    for (i = 0; i < LLMGW_METRICS_STATUSES; i++) {
        if (s->status_n[i] && s->status[i] == status) {
            return s->status_n[i];
        }
    }
    return 0;
}

START_TEST(series_count_requests)
{
    llmgw_metrics_t *m = fresh(T0);
    llmgw_metrics_obs_t o = obs("r1", "m1", 200, 10, 5);
    llmgw_metrics_series_t s;
    llmgw_metrics_counts_t t;

    o.balancer = "balancer://be";
    o.member = "http://127.0.0.1:1";
    o.ttft = 70 * MS;
    o.cache = LLMGW_CR_MISS;
    llmgw_metrics_record(m, &o, T0 + SEC);
    o = obs("r1", "m1", 502, -1, -1); /* no usage: counts none */
    o.error = 1;
    llmgw_metrics_record(m, &o, T0 + SEC);
    o = obs("r1", "m2", 200, 3, 4);
    o.cache = LLMGW_CR_HIT;
    o.saved = 7;
    llmgw_metrics_record(m, &o, T0 + SEC);

    s = found(m, LLMGW_MT_MODELS, "r1", "m1");
    ck_assert_uint_eq(s.c.requests, 2);
    ck_assert_uint_eq(s.c.errors, 1);
    ck_assert_uint_eq(s.c.prompt, 10);
    ck_assert_uint_eq(s.c.completion, 5);
    ck_assert_uint_eq(status_count(&s, 200), 1);
    ck_assert_uint_eq(status_count(&s, 502), 1);
    ck_assert_uint_eq(s.c.ttft_n, 1);
    ck_assert_uint_eq(s.c.ttft_us, 70 * MS);
    /* 30 ms is in the (0.025, 0.05] bucket, 70 ms in (0.05, 0.1]. */
    ck_assert_uint_eq(s.c.duration[2], 2);
    ck_assert_uint_eq(s.c.ttft[3], 1);
    s = found(m, LLMGW_MT_MEMBERS, "balancer://be", "http://127.0.0.1:1");
    ck_assert_uint_eq(s.c.requests, 1);
    ck_assert(!llmgw_metrics_find(m, LLMGW_MT_MODELS, "r1", "m3", &s));
    llmgw_metrics_sum(m, LLMGW_MT_MODELS, "r1", &t);
    ck_assert_uint_eq(t.requests, 3);
    ck_assert_uint_eq(t.prompt, 13);
    llmgw_metrics_total(m, &t);
    ck_assert_uint_eq(t.requests, 3);
    ck_assert_uint_eq(t.cache[LLMGW_CR_HIT], 1);
    ck_assert_uint_eq(t.cache[LLMGW_CR_MISS], 1);
    ck_assert_uint_eq(t.saved, 7);
}
END_TEST

START_TEST(what_does_not_fit_is_other)
{
    llmgw_metrics_t *m = fresh(T0);
    char longname[LLMGW_METRICS_LABEL_MAX + 2];
    llmgw_metrics_series_t s;
    llmgw_metrics_obs_t o;
    unsigned cursor = 0, n = 0;
    int i;

    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    o = obs("r", longname, 200, 1, 1);
    llmgw_metrics_record(m, &o, T0);
    o = obs("r", "new\nline", 200, 1, 1);
    llmgw_metrics_record(m, &o, T0);
    s = found(m, LLMGW_MT_MODELS, LLMGW_METRICS_OTHER, LLMGW_METRICS_OTHER);
    ck_assert_uint_eq(s.c.requests, 2);
    /* More statuses than a series keeps: the rest are "other" (-1). */
    for (i = 0; i < LLMGW_METRICS_STATUSES + 3; i++) {
        o = obs("r", "statuses", 400 + i, 0, 0);
        llmgw_metrics_record(m, &o, T0);
    }
    s = found(m, LLMGW_MT_MODELS, "r", "statuses");
    ck_assert_uint_eq(status_count(&s, 400), 1);
    ck_assert_uint_eq(status_count(&s, -1), 4);
    ck_assert_uint_eq(s.c.requests, LLMGW_METRICS_STATUSES + 3);
    /* A full table sends new names to the other series, keeps the old. */
    for (i = 0; i < LLMGW_METRICS_SERIES + 20; i++) {
        o = obs("many", apr_itoa(test_pool, i), 200, 0, 0);
        llmgw_metrics_record(m, &o, T0);
    }
    while (llmgw_metrics_next(m, LLMGW_MT_MODELS, &cursor, &s)) {
        n++;
    }
    ck_assert_uint_eq(n, LLMGW_METRICS_SERIES);
    llmgw_metrics_total(m, &s.c);
    ck_assert_uint_eq(s.c.requests, 2 + LLMGW_METRICS_STATUSES + 3
                                        + LLMGW_METRICS_SERIES + 20);
    s = found(m, LLMGW_MT_MODELS, "r", "statuses");
    ck_assert_uint_eq(s.c.requests, LLMGW_METRICS_STATUSES + 3);
}
END_TEST

START_TEST(window_by_second)
{
    llmgw_metrics_t *m = fresh(T0);
    llmgw_metrics_counts_t each[10], sum;
    llmgw_metrics_obs_t o = obs("r", "m", 200, 2, 3);
    int i;

    /* Seconds 1 and 4 after T0 have one request, second 7 has two. */
    llmgw_metrics_record(m, &o, T0 + 1 * SEC);
    llmgw_metrics_record(m, &o, T0 + 4 * SEC + 500 * MS);
    llmgw_metrics_record(m, &o, T0 + 7 * SEC);
    llmgw_metrics_record(m, &o, T0 + 7 * SEC + 999 * MS);
    llmgw_metrics_window(m, T0 + 9 * SEC, 10, each, &sum);
    /* each[0] is second 0 ... each[9] second 9. */
    for (i = 0; i < 10; i++) {
        ck_assert_uint_eq(each[i].requests, i == 1 || i == 4 ? 1
                                            : i == 7         ? 2
                                                             : 0);
    }
    ck_assert_uint_eq(each[7].prompt + each[7].completion, 10);
    ck_assert_uint_eq(sum.requests, 4);
    /* The last 4 seconds (6..9) hold the two of second 7. */
    llmgw_metrics_window(m, T0 + 9 * SEC, 4, NULL, &sum);
    ck_assert_uint_eq(sum.requests, 2);
    /* Long after, nothing is recent. */
    llmgw_metrics_window(m, T0 + 1000 * SEC, 60, NULL, &sum);
    ck_assert_uint_eq(sum.requests, 0);
    /* And traffic then counts from the first of its seconds on. */
    llmgw_metrics_record(m, &o, T0 + 1000 * SEC);
    llmgw_metrics_record(m, &o, T0 + 1001 * SEC);
    llmgw_metrics_window(m, T0 + 1001 * SEC, 60, NULL, &sum);
    ck_assert_uint_le(sum.requests, 2);
    ck_assert_uint_ge(sum.requests, 1);
}
END_TEST

START_TEST(quantiles)
{
    apr_uint64_t h[LLMGW_METRICS_BUCKETS + 1] = { 0 };

    ck_assert(llmgw_metrics_quantile(h, 0.5) < 0);
    /* 10 in (0.1, 0.25]: the median is half-way through it. */
    h[4] = 10;
    ck_assert_double_eq_tol(llmgw_metrics_quantile(h, 0.5), 0.175, 1e-9);
    /* 90 more in (0, 0.01]: p50 falls in the first bucket. */
    h[0] = 90;
    ck_assert_double_le(llmgw_metrics_quantile(h, 0.5), 0.01);
    ck_assert_double_gt(llmgw_metrics_quantile(h, 0.95), 0.1);
    /* Past the last bound, the last bound. */
    memset(h, 0, sizeof(h));
    h[LLMGW_METRICS_BUCKETS] = 3;
    ck_assert_double_eq(llmgw_metrics_quantile(h, 0.5), 120);
}
END_TEST

START_TEST(attach_keeps_counts)
{
    apr_size_t size = llmgw_metrics_size();
    void *mem = apr_pcalloc(test_pool, size);
    llmgw_metrics_t *m = llmgw_metrics_init(mem, size, T0), *again;
    llmgw_metrics_obs_t o = obs("r", "m", 200, 1, 1);
    llmgw_metrics_series_t s;

    llmgw_metrics_record(m, &o, T0);
    ck_assert_ptr_null(llmgw_metrics_attach(mem, size - 1));
    again = llmgw_metrics_attach(mem, size);
    ck_assert_ptr_eq(again, m);
    ck_assert_uint_eq(llmgw_metrics_restarts(again), 1);
    ck_assert_int_eq(llmgw_metrics_started(again), T0);
    s = found(again, LLMGW_MT_MODELS, "r", "m");
    ck_assert_uint_eq(s.c.requests, 1);
    memset(mem, 0, 8);
    ck_assert_ptr_null(llmgw_metrics_attach(mem, size));
}
END_TEST

#define CHILDREN 4
#define PER_CHILD 20000

/* Several processes count into one table at once, on the same series and
 * on new ones, across seconds: every count is there. */
START_TEST(exact_across_processes)
{
    apr_size_t size = llmgw_metrics_size() + 64;
    char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int *go = (int *)(mem + llmgw_metrics_size());
    llmgw_metrics_t *m;
    llmgw_metrics_series_t s;
    llmgw_metrics_counts_t t, sum;
    pid_t pids[CHILDREN];
    int i, st;

    ck_assert_ptr_ne(mem, MAP_FAILED);
    m = llmgw_metrics_init(mem, size, T0);
    for (i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            int k;

            /* All start together, or each would be done before the next
             * is forked. */
            while (!__atomic_load_n(go, __ATOMIC_ACQUIRE)) {
            }

            for (k = 0; k < PER_CHILD; k++) {
                char model[16];
                llmgw_metrics_obs_t o = obs("r", "shared", 200, 1, 2);

                llmgw_metrics_record(m, &o, T0 + (k / 4000) * SEC);
                snprintf(model, sizeof(model), "m%d", k % 50);
                o = obs("r", model, 200 + k % 3, 1, 0);
                llmgw_metrics_record(m, &o, T0 + (k / 4000) * SEC);
            }
            _exit(0);
        }
    }
    __atomic_store_n(go, 1, __ATOMIC_RELEASE);
    for (i = 0; i < CHILDREN; i++) {
        ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    s = found(m, LLMGW_MT_MODELS, "r", "shared");
    ck_assert_uint_eq(s.c.requests, CHILDREN * PER_CHILD);
    ck_assert_uint_eq(s.c.completion, 2 * CHILDREN * PER_CHILD);
    ck_assert_uint_eq(status_count(&s, 200), CHILDREN * PER_CHILD);
    llmgw_metrics_sum(m, LLMGW_MT_MODELS, "r", &t);
    ck_assert_uint_eq(t.requests, 2 * CHILDREN * PER_CHILD);
    s = found(m, LLMGW_MT_MODELS, "r", "m7");
    ck_assert_uint_eq(s.c.requests, CHILDREN * PER_CHILD / 50);
    ck_assert(!llmgw_metrics_find(m, LLMGW_MT_MODELS, LLMGW_METRICS_OTHER,
                                  LLMGW_METRICS_OTHER, &s));
    /* The ring's seconds add up to the total. */
    llmgw_metrics_window(m, T0 + 10 * SEC, 20, NULL, &sum);
    ck_assert_uint_eq(sum.requests, 2 * CHILDREN * PER_CHILD);
    munmap(mem, size);
}
END_TEST

/* The text's samples, read back with llmgw_prom_next, as "name{l=v,...}"
 * -> value lines in one string. */
static const char *read_back(const char *text, apr_size_t len)
{
    const char *pos = text, *end = text + len;
    llmgw_prom_sample_t s;
    char *out = "";
    int rc, i;

    while ((rc = llmgw_prom_next(test_pool, &pos, end, &s)) == 1) {
        char *line = apr_pstrmemdup(test_pool, s.name, s.name_len);

        for (i = 0; i < s.nlabels; i++) {
            line = apr_pstrcat(test_pool, line, i ? "," : "{",
                               apr_pstrmemdup(test_pool, s.label_name[i],
                                              s.label_name_len[i]),
                               "=",
                               apr_pstrmemdup(test_pool, s.label_value[i],
                                              s.label_value_len[i]),
                               NULL);
        }
        char num[32];

        /* C's %g: APR's drops the 0 before the point. */
        snprintf(num, sizeof(num), "%g", s.value);
        out = apr_pstrcat(test_pool, out, line, s.nlabels ? "}" : "", " ", num,
                          "\n", NULL);
    }
    ck_assert_int_eq(rc, 0);
    return out;
}

START_TEST(prometheus_text)
{
    llmgw_metrics_t *m = fresh(T0);
    llmgw_metrics_obs_t o = obs("r\"1", "a\\b", 200, 10, 5);
    llmgw_pbuf_t b = { 0 };
    const char *got;

    o.ttft = 20 * MS;
    o.cache = LLMGW_CR_HIT;
    o.saved = 15;
    llmgw_metrics_record(m, &o, T0);
    o = obs("r\"1", "a\\b", 404, -1, -1);
    llmgw_metrics_record(m, &o, T0);
    llmgw_metrics_prom(m, test_pool, &b);
    ck_assert_has(b.b, "# TYPE llmgw_requests_total counter\n",
                  "# TYPE llmgw_request_duration_seconds histogram\n",
                  "llmgw_requests_total{route=\"r\\\"1\",model=\"a\\\\b\","
                  "status=\"200\"} 1\n");
    got = read_back(b.b, b.len);
    ck_assert_has(
        got, "llmgw_requests_total{route=r\"1,model=a\\b,status=200} 1\n",
        "llmgw_requests_total{route=r\"1,model=a\\b,status=404} 1\n",
        "llmgw_tokens_total{route=r\"1,model=a\\b,kind=prompt} 10\n",
        "llmgw_tokens_total{route=r\"1,model=a\\b,kind=completion} 5\n",
        "llmgw_request_duration_seconds_bucket{route=r\"1,"
        "model=a\\b,le=0.025} 0\n",
        "llmgw_request_duration_seconds_bucket{route=r\"1,"
        "model=a\\b,le=0.05} 2\n",
        "llmgw_request_duration_seconds_bucket{route=r\"1,"
        "model=a\\b,le=+Inf} 2\n",
        "llmgw_request_duration_seconds_count{route=r\"1,"
        "model=a\\b} 2\n",
        "llmgw_request_duration_seconds_sum{route=r\"1,"
        "model=a\\b} 0.06\n",
        "llmgw_ttft_seconds_count{route=r\"1,model=a\\b} 1\n",
        "llmgw_ttft_seconds_bucket{route=r\"1,model=a\\b,"
        "le=0.025} 1\n",
        "llmgw_cache_requests_total{result=hit} 1\n",
        "llmgw_cache_requests_total{result=miss} 0\n",
        "llmgw_cache_saved_tokens_total 15\n");
}
END_TEST

START_TEST(status_json)
{
    llmgw_metrics_t *m = fresh(T0);
    llmgw_metrics_obs_t o = obs("r", "m", 200, 10, 5);
    json_object *st = json_object_new_object(), *v, *s;

    llmgw_metrics_record(m, &o, T0 + 2 * SEC);
    llmgw_metrics_record(m, &o, T0 + 3 * SEC);
    llmgw_metrics_json(m, T0 + 4 * SEC, 10, st);
    ck_assert(json_object_object_get_ex(st, "total", &v));
    ck_assert(json_object_object_get_ex(v, "requests", &v));
    ck_assert_int_eq(json_object_get_int64(v), 2);
    ck_assert(json_object_object_get_ex(st, "chart", &v));
    ck_assert(json_object_object_get_ex(v, "requests", &v));
    ck_assert_int_eq(json_object_array_length(v), 10);
    /* Oldest first: seconds -5..4; 2 and 3 are the 8th and 9th. */
    ck_assert_int_eq(json_object_get_int(json_object_array_get_idx(v, 7)), 1);
    ck_assert_int_eq(json_object_get_int(json_object_array_get_idx(v, 8)), 1);
    ck_assert_int_eq(json_object_get_int(json_object_array_get_idx(v, 9)), 0);
    ck_assert(json_object_object_get_ex(st, "models", &v));
    ck_assert_int_eq(json_object_array_length(v), 1);
    s = json_object_array_get_idx(v, 0);
    ck_assert_str_eq(json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN),
                     "{\"requests\":2,\"errors\":0,\"prompt_tokens\":20,"
                     "\"completion_tokens\":10,\"saved_tokens\":0,"
                     "\"cache\":{\"hit\":0,\"miss\":0,\"bypass\":0,"
                     "\"coalesced\":0},\"hit_rate\":null,"
                     "\"duration_p50\":0.0375,\"duration_p95\":0.04875,"
                     "\"ttft_p50\":null,\"ttft_p95\":null,\"route\":\"r\","
                     "\"model\":\"m\",\"statuses\":{\"200\":2}}");
    json_object_put(st);
}
END_TEST

/* ---------------------------------------------------------------------
 * The keys and health views
 */

/* A request of this process charged to subject s alone. */
static void one_subject(llmgw_limits_req_t *rq, llmgw_limits_subject_t s,
                        apr_int64_t prompt, apr_int64_t max_out)
{
    memset(rq, 0, sizeof(*rq));
    rq->subject[0] = s;
    rq->nsubjects = 1;
    rq->prompt = prompt;
    rq->max_out = max_out;
    rq->owner = getpid();
}

static llmgw_limits_t *two_keys(void)
{
    apr_size_t size = llmgw_limits_size(8, 8);
    void *mem = apr_pcalloc(test_pool, size);
    llmgw_limits_t *t = llmgw_limits_init(mem, size, 8, 8, 0);
    llmgw_limits_def_t d[2];
    llmgw_limits_subject_t s;
    llmgw_limits_req_t rq;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;

    ck_assert_ptr_nonnull(t);
    memset(d, 0, sizeof(d));
    d[0].name = "key:team-a";
    d[0].conf.rpm = 1;
    d[0].conf.budget[0].unit = LLMGW_BUDGET_TOKENS;
    d[0].conf.budget[0].per = LLMGW_PER_DAY;
    d[0].conf.budget[0].limit = 1000;
    d[1].name = "key:<script>";
    d[1].conf.tpm = 500;
    ck_assert_int_eq(llmgw_limits_configure(t, d, 2, NULL, T0), APR_SUCCESS);
    ck_assert_int_eq(llmgw_limits_find(t, "key:team-a", &s), APR_SUCCESS);
    one_subject(&rq, s, 100, 50);
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &tk, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_settle(t, &tk, 90, 30, T0), APR_SUCCESS);
    /* A second request in the minute: refused by rpm. */
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &tk, &v),
                     LLMGW_LIMIT_RPM);
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &tk, &v),
                     LLMGW_LIMIT_RPM);
    return t;
}

START_TEST(keys_view)
{
    llmgw_limits_t *t = two_keys();
    json_object *st = json_object_new_object(), *keys, *k, *v;
    const char *txt;

    llmgw_status_keys(st, NULL, T0);
    ck_assert_str_eq(json_object_to_json_string(st), "{ \"keys\": null }");
    llmgw_status_keys(st, t, T0);
    ck_assert(json_object_object_get_ex(st, "keys", &keys));
    ck_assert_int_eq(json_object_array_length(keys), 2);
    k = json_object_array_get_idx(keys, 0);
    txt = json_object_to_json_string_ext(k, JSON_C_TO_STRING_PLAIN);
    ck_assert_has(txt, "\"subject\":\"key:team-a\"", "\"kind\":\"key\"",
                  "\"name\":\"team-a\"",
                  "\"rpm\":{\"limit\":1,\"remaining\":0}", "\"tpm\":null",
                  "\"budgets\":[{\"unit\":\"tokens\",\"period\":\"day\","
                  "\"limit\":1000,\"used\":120,\"reserved\":0,"
                  "\"remaining\":880,",
                  "\"ratelimited\":2", "\"rpm\":2", "\"requests\":1",
                  "\"prompt_tokens\":90", "\"completion_tokens\":30");
    ck_assert(json_object_object_get_ex(json_object_array_get_idx(keys, 1),
                                        "name", &v));
    ck_assert_str_eq(json_object_get_string(v), "<script>");
    json_object_put(st);
}
END_TEST

START_TEST(keys_prometheus)
{
    llmgw_limits_t *t = two_keys();
    llmgw_pbuf_t b = { 0 };
    const char *got;

    llmgw_status_keys_prom(NULL, test_pool, &b, T0);
    ck_assert_uint_eq(b.len, 0);
    llmgw_status_keys_prom(t, test_pool, &b, T0);
    got = read_back(b.b, b.len);
    ck_assert_has(got, "llmgw_budget_used_tokens{key=team-a,period=day} 120\n",
                  "llmgw_budget_limit_tokens{key=team-a,period=day} 1000\n",
                  "llmgw_budget_reserved_tokens{key=team-a,period=day} 0\n",
                  "llmgw_ratelimited_total{key=team-a} 2\n",
                  "llmgw_ratelimited_total{key=<script>} 0\n");
    ck_assert_lacks(got, "llmgw_budget_used_tokens{key=<script>");
}
END_TEST

/* The console's reset: the budget's period starts afresh, a request in
 * flight still settles (its tokens count after the reset), the counters
 * of requests and 429s stay, a spent budget admits again. */
START_TEST(reset_keeps_what_is_in_flight)
{
    llmgw_limits_t *t = two_keys();
    llmgw_limits_subject_t s, gone;
    llmgw_limits_usage_t u;
    llmgw_limits_req_t rq;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    apr_time_t later = T0 + 120 * SEC; /* rpm has room again */

    ck_assert_int_eq(llmgw_limits_find(t, "key:team-a", &s), APR_SUCCESS);
    one_subject(&rq, s, 800, 100);
    /* 120 used of 1000: 900 more is refused by the budget. */
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, later, &tk, &v),
                     LLMGW_LIMIT_BUDGET_TOKENS);
    rq.prompt = 40;
    rq.max_out = 10;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, later, &tk, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_reset(t, &s, later + SEC), APR_SUCCESS);
    ck_assert_int_eq(llmgw_limits_usage(t, &s, later + SEC, &u), APR_SUCCESS);
    ck_assert_int_eq(u.budget[0].used, 0);
    ck_assert_int_eq(u.budget[0].reserved, 50);
    ck_assert_int_eq(u.budget[0].remaining, 950);
    ck_assert_int_eq(u.requests, 2);
    ck_assert_int_eq(u.refused[LLMGW_LIMIT_RPM], 2);
    ck_assert_int_eq(u.refused[LLMGW_LIMIT_BUDGET_TOKENS], 1);
    ck_assert_int_eq(llmgw_limits_settle(t, &tk, 30, 5, later + SEC),
                     APR_SUCCESS);
    ck_assert_int_eq(llmgw_limits_usage(t, &s, later + SEC, &u), APR_SUCCESS);
    ck_assert_int_eq(u.budget[0].used, 35);
    ck_assert_int_eq(u.budget[0].reserved, 0);
    /* What was refused before passes now (past rpm's minute). */
    rq.prompt = 800;
    rq.max_out = 100;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, later + 120 * SEC, &tk, &v),
                     LLMGW_LIMIT_OK);
    gone = s;
    gone.gen++;
    ck_assert_int_eq(llmgw_limits_reset(t, &gone, later), APR_NOTFOUND);
}
END_TEST

START_TEST(health_view)
{
    apr_size_t size = llmgw_health_size(2);
    void *mem = apr_pcalloc(test_pool, size);
    llmgw_health_t *h = llmgw_health_init(mem, size, 2, T0);
    json_object *member = json_object_new_object(), *v, *x;

    llmgw_status_member_health(member, NULL, "http://a", T0);
    ck_assert(json_object_object_get_ex(member, "health", &v));
    ck_assert(json_object_is_type(v, json_type_null));
    ck_assert_int_eq(llmgw_health_add(h, "http://a"), 0);
    llmgw_health_hint(h, 0, "llama3", LLMGW_HINT_SERVED, T0);
    llmgw_status_member_health(member, h, "http://nope", T0);
    ck_assert(json_object_object_get_ex(member, "health", &v));
    ck_assert(json_object_is_type(v, json_type_null));
    llmgw_status_member_health(member, h, "http://a", T0);
    ck_assert(json_object_object_get_ex(member, "health", &v));
    ck_assert(json_object_object_get_ex(v, "circuit", &x));
    ck_assert_str_eq(json_object_get_string(x), "closed");
    ck_assert(json_object_object_get_ex(v, "last_probe", &x));
    ck_assert(json_object_is_type(x, json_type_null));
    json_object_put(member);
}
END_TEST

Suite *metrics_suite(void)
{
    return test_suite("metrics", "core", 60,
                      TESTS(series_count_requests, what_does_not_fit_is_other,
                            window_by_second, quantiles, attach_keeps_counts,
                            exact_across_processes, prometheus_text,
                            status_json, keys_view, keys_prometheus,
                            reset_keeps_what_is_in_flight, health_view));
}
