/* bench/limits_micro.c: what the limits cost a request, in ns: reserve +
 * settle alone, the whole per-request path (find the subjects, headroom,
 * estimate, reserve, settle), and reserve + settle from two processes on
 * one shared table at once. Build: make bench/limits_micro; run it on a
 * quiet machine: bench/limits_micro [iterations]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <apr_general.h>

#include "llmgw_estimate.h"
#include "llmgw_limits.h"

#define T0 (APR_INT64_C(1767225600) * APR_USEC_PER_SEC)

/* CPU time of this thread: what the calls cost, whatever else the
 * machine runs meanwhile (the wall clock counts that too). */
static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* The gateway's clock: 100 us a request (10,000 a second), so that the
 * rate limits refill as they would and never refuse. */
static apr_time_t clock_us = T0;

static llmgw_limits_t *make_table(void)
{
    apr_size_t size = llmgw_limits_size(1024, 1024);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    llmgw_limits_t *t = llmgw_limits_init(mem, size, 1024, 1024, 0);
    llmgw_limits_def_t d[3];

    memset(d, 0, sizeof(d));
    d[0].name = "key:team-a";
    d[0].conf.rpm = 1000000000;
    d[0].conf.tpm = 1000000000;
    d[0].conf.budget[0].unit = LLMGW_BUDGET_TOKENS;
    d[0].conf.budget[0].per = LLMGW_PER_DAY;
    d[0].conf.budget[0].limit = APR_INT64_C(1) << 50;
    d[0].conf.budget[1].unit = LLMGW_BUDGET_COST;
    d[0].conf.budget[1].per = LLMGW_PER_MONTH;
    d[0].conf.budget[1].limit = APR_INT64_C(1) << 50;
    d[1].name = "route:llama3*";
    d[1].conf.concurrent = 1000;
    d[2].name = "key+route:team-a\037llama3*";
    d[2].conf.rpm = 1000000000;
    llmgw_limits_configure(t, d, 3, NULL, T0);
    return t;
}

static void subjects(llmgw_limits_t *t, llmgw_limits_req_t *rq)
{
    memset(rq, 0, sizeof(*rq));
    llmgw_limits_find(t, "key:team-a", &rq->subject[0]);
    llmgw_limits_find(t, "route:llama3*", &rq->subject[1]);
    llmgw_limits_find(t, "key+route:team-a\037llama3*", &rq->subject[2]);
    rq->nsubjects = 3;
    rq->prompt = 120;
    rq->max_out = 256;
    rq->price.in = 150000;
    rq->price.out = 600000;
    rq->owner = getpid();
}

static double bench_reserve_settle(llmgw_limits_t *t, long n)
{
    llmgw_limits_req_t rq;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    double start;
    long i;

    subjects(t, &rq);
    start = now_ns();
    for (i = 0; i < n; i++) {
        apr_time_t now = clock_us += 100;

        if (llmgw_limits_reserve(t, &rq, now, &tk, &v) != LLMGW_LIMIT_OK) {
            fprintf(stderr, "refused at %ld\n", i);
            exit(1);
        }
        llmgw_limits_settle(t, &tk, 100, 80, now);
    }
    return (now_ns() - start) / n;
}

/* What the fixups hook and the output filter would call per request. */
static double bench_request_path(llmgw_limits_t *t, apr_pool_t *p, long n)
{
    static const char *body =
        "{\"model\":\"llama3.2\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},"
        "{\"role\":\"user\",\"content\":\"Write a haiku about the sea and "
        "the wind over it, in English.\"}],\"temperature\":0}";
    llmgw_estimate_conf_t ec;
    llmgw_request_t req;
    llmgw_error_t err;
    llmgw_limits_req_t rq;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    llmgw_estimate_t e;
    apr_pool_t *rp;
    double start, spent = 0;
    long i;

    llmgw_estimate_defaults(&ec);
    apr_pool_create(&rp, p);
    for (i = 0; i < n; i++) {
        apr_time_t now = clock_us += 100;

        llmgw_request_parse(rp, LLMGW_EP_CHAT, body, strlen(body), &req, &err);
        start = now_ns();
        memset(&rq, 0, sizeof(rq));
        llmgw_limits_find(t, "key:team-a", &rq.subject[0]);
        llmgw_limits_find(t, "route:llama3*", &rq.subject[1]);
        llmgw_limits_find(t, "key+route:team-a\037llama3*", &rq.subject[2]);
        rq.nsubjects = 3;
        llmgw_estimate(&req, &ec, llmgw_limits_headroom(t, rq.subject, 3, now),
                       &e, &err);
        rq.prompt = e.prompt;
        rq.max_out = e.max_out;
        rq.owner = getpid();
        if (llmgw_limits_reserve(t, &rq, now, &tk, &v) != LLMGW_LIMIT_OK) {
            fprintf(stderr, "refused at %ld\n", i);
            exit(1);
        }
        llmgw_limits_settle(t, &tk, 40, 17, now);
        spent += now_ns() - start;
        apr_pool_clear(rp);
    }
    return spent / n;
}

/* Two processes at once (the machine's two cores): ns per pair of calls
 * as each process sees it, and the total rate. */
static void bench_two_processes(llmgw_limits_t *t, long n)
{
    double start = wall_ns(), each;
    int k, status;
    pid_t pid[2];

    for (k = 0; k < 2; k++) {
        if ((pid[k] = fork()) == 0) {
            bench_reserve_settle(t, n);
            _exit(0);
        }
    }
    for (k = 0; k < 2; k++) {
        waitpid(pid[k], &status, 0);
    }
    each = (wall_ns() - start) / n;
    printf("reserve+settle, 2 processes at once (wall clock): %.0f ns per "
           "op per process, %.2f M ops/s in all\n",
           each, 2e3 / each);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    apr_pool_t *p;
    llmgw_limits_t *t;
    int round;

    apr_initialize();
    apr_pool_create(&p, NULL);
    t = make_table();
    bench_reserve_settle(t, n / 10); /* warm up */
    for (round = 0; round < 3; round++) {
        printf("reserve+settle (3 subjects, rpm, tpm, 2 budgets, "
               "concurrency): %.0f ns\n",
               bench_reserve_settle(t, n));
    }
    for (round = 0; round < 3; round++) {
        printf("whole path (3 finds, headroom, estimate, reserve, "
               "settle): %.0f ns\n",
               bench_request_path(t, p, n / 4));
    }
    bench_two_processes(t, n);
    apr_terminate();
    return 0;
}
