/* probe_read: reads one probe answer (its body on stdin) with the core's
 * reader and prints what it found as one JSON object, so that the tests
 * can check the emulated backend's answers against the gateway's own
 * reading of them. Usage: probe_read KIND STATUS < body. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "llmgw_json.h"
#include "llmgw_probe.h"

typedef struct {
    unsigned bit;
    const char *name;
} flag_name_t;

/* In the order they are printed; a NULL name ends each. */
static const flag_name_t model_flags[] = { { LLMGW_PM_LOADED, "loaded" },
                                           { LLMGW_PM_AVAILABLE, "available" },
                                           { LLMGW_PM_LOADING, "loading" },
                                           { 0, NULL } };
static const flag_name_t knows_flags[] = { { LLMGW_PK_STATE, "state" },
                                           { LLMGW_PK_LOADED, "loaded" },
                                           { LLMGW_PK_AVAILABLE, "available" },
                                           { LLMGW_PK_SLOTS, "slots" },
                                           { LLMGW_PK_QUEUE, "queue" },
                                           { LLMGW_PK_KV, "kv" },
                                           { 0, NULL } };

/* The names of the bits of f (a model's flags, or what a probe knows) as a
 * JSON array. */
static const char *flags_text(apr_pool_t *p, unsigned f, int model)
{
    const flag_name_t *t = model ? model_flags : knows_flags;
    const char *s = "[";
    const char *sep = "";

    for (; t->name; t++) {
        if (f & t->bit) {
            s = apr_pstrcat(p, s, sep, "\"", t->name, "\"", NULL), sep = ",";
        }
    }
    return apr_pstrcat(p, s, "]", NULL);
}

static void print_result(apr_pool_t *p, const llmgw_probe_t *r)
{
    int i;

    printf("{\"ok\":%d,\"state\":\"%s\",\"knows\":%s,\"slots_total\":"
           "%" APR_INT64_T_FMT ",\"slots_busy\":%" APR_INT64_T_FMT
           ",\"running\":%" APR_INT64_T_FMT ",\"waiting\":%" APR_INT64_T_FMT
           ",\"kv_usage\":%.6f,\"why\":%s,\"models\":[",
           r->ok, llmgw_hstate_name(r->state), flags_text(p, r->knows, 0),
           r->slots_total, r->slots_busy, r->running, r->waiting, r->kv_usage,
           r->why ? llmgw_json_quote(p, r->why) : "null");
    for (i = 0; i < r->models->nelts; i++) {
        const llmgw_probe_model_t *m =
            &APR_ARRAY_IDX(r->models, i, llmgw_probe_model_t);

        printf("%s{\"name\":%s,\"flags\":%s,\"size_vram\":%" APR_INT64_T_FMT
               ",\"expires_at\":%" APR_INT64_T_FMT
               ",\"running\":%" APR_INT64_T_FMT
               ",\"waiting\":%" APR_INT64_T_FMT ",\"kv_usage\":%.6f}",
               i ? "," : "", llmgw_json_quote(p, m->name),
               flags_text(p, m->flags, 1), m->size_vram,
               (apr_int64_t)apr_time_sec(m->expires_at), m->running,
               m->waiting, m->kv_usage);
    }
    printf("]}\n");
}

int main(int argc, char **argv)
{
    apr_pool_t *p;
    char *body = NULL;
    apr_size_t len = 0, cap = 0;
    int kind, status;
    size_t n;

    if (argc != 3) {
        fprintf(stderr, "usage: probe_read KIND STATUS < body\n");
        return 2;
    }
    for (kind = 0; kind < LLMGW_PROBE_KINDS; kind++) {
        if (strcmp(argv[1], llmgw_probe_name((llmgw_probe_kind_t)kind)) == 0) {
            break;
        }
    }
    status = atoi(argv[2]);
    if (kind == LLMGW_PROBE_KINDS) {
        fprintf(stderr, "probe_read: no probe kind '%s'\n", argv[1]);
        return 2;
    }
    do {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > 2 * LLMGW_PROBE_MAX_METRICS
                || !(body = realloc(body, cap))) {
                fprintf(stderr, "probe_read: body too large\n");
                return 1;
            }
        }
        n = fread(body + len, 1, cap - len, stdin);
        len += n;
    } while (n > 0);
    apr_initialize();
    apr_pool_create(&p, NULL);
    print_result(
        p, llmgw_probe_parse(p, (llmgw_probe_kind_t)kind, status, body, len));
    apr_pool_destroy(p);
    apr_terminate();
    free(body);
    return 0;
}
