/* llmgw_probe: one reader per probe kind, each total over any input: the
 * JSON answers go through the strict reader (llmgw_json_parse), vLLM's
 * Prometheus text through llmgw_prom, which does not copy lines. What a
 * field must be is checked before it is used; a field that is there but
 * not what it must be refuses the whole answer. */
#include <string.h>
#include <strings.h>

#include <apr_hash.h>
#include <apr_strings.h>

#include "llmgw_json.h"
#include "llmgw_probe.h"
#include "llmgw_prom.h"

static const struct {
    const char *name;
    const char *path;
} kinds[LLMGW_PROBE_KINDS] = {
    { "ollama-ps", "/api/ps" },       { "ollama-tags", "/api/tags" },
    { "llamacpp-health", "/health" }, { "llamacpp-slots", "/slots" },
    { "vllm-metrics", "/metrics" },   { "openai-models", "/v1/models" },
};

const char *llmgw_hstate_name(llmgw_hstate_t s)
{
    switch (s) {
    case LLMGW_HS_READY: return "ready";
    case LLMGW_HS_LOADING: return "loading";
    case LLMGW_HS_BUSY: return "busy";
    case LLMGW_HS_DOWN: return "down";
    case LLMGW_HS_ABSENT: return "absent";
    default: return "unknown";
    }
}

const char *llmgw_probe_path(llmgw_probe_kind_t kind)
{
    return (unsigned)kind < LLMGW_PROBE_KINDS ? kinds[kind].path : NULL;
}

const char *llmgw_probe_name(llmgw_probe_kind_t kind)
{
    return (unsigned)kind < LLMGW_PROBE_KINDS ? kinds[kind].name : NULL;
}

/* The probes of each backend type (LLMProbe's names). */
static const struct {
    const char *name;
    int n;
    llmgw_probe_kind_t kinds[2];
} sets[] = {
    { "ollama", 2, { LLMGW_PROBE_OLLAMA_PS, LLMGW_PROBE_OLLAMA_TAGS } },
    { "llamacpp",
      2,
      { LLMGW_PROBE_LLAMACPP_HEALTH, LLMGW_PROBE_LLAMACPP_SLOTS } },
    { "vllm", 2, { LLMGW_PROBE_VLLM_METRICS, LLMGW_PROBE_OPENAI_MODELS } },
    { "openai", 1, { LLMGW_PROBE_OPENAI_MODELS } },
};

int llmgw_probe_set(const char *name, llmgw_probe_kind_t *out)
{
    apr_size_t i;
    int k;

    for (i = 0; name && i < sizeof(sets) / sizeof(sets[0]); i++) {
        if (strcmp(name, sets[i].name) == 0) {
            for (k = 0; k < sets[i].n; k++) {
                out[k] = sets[i].kinds[k];
            }
            return sets[i].n;
        }
    }
    return 0;
}

/* ---- results ---------------------------------------------------------- */

/* Down, with no counts (-1): what a probe says until it is read. */
static void know_nothing(llmgw_probe_t *r)
{
    r->state = LLMGW_HS_DOWN;
    r->slots_total = r->slots_busy = -1;
    r->running = r->waiting = -1;
    r->kv_usage = -1.0;
}

static llmgw_probe_t *result(apr_pool_t *p, llmgw_probe_kind_t kind,
                             int status)
{
    llmgw_probe_t *r = apr_pcalloc(p, sizeof(*r));

    r->kind = kind;
    r->http_status = status;
    know_nothing(r);
    r->models = apr_array_make(p, 4, sizeof(llmgw_probe_model_t));
    return r;
}

/* The answer could not be read as meant: nothing it says is kept. */
static llmgw_probe_t *refuse(llmgw_probe_t *r, const char *why)
{
    r->ok = 0;
    r->knows = 0;
    know_nothing(r);
    apr_array_clear(r->models);
    r->models_skipped = 0;
    r->why = why;
    return r;
}

static llmgw_probe_t *take(llmgw_probe_t *r, llmgw_hstate_t state,
                           unsigned knows, const char *why)
{
    r->ok = 1;
    r->state = state;
    r->knows = knows;
    r->why = why;
    return r;
}

llmgw_probe_t *llmgw_probe_unreachable(apr_pool_t *p, llmgw_probe_kind_t kind,
                                       const char *why)
{
    return refuse(result(p, kind, 0), why ? why : "no answer");
}

static llmgw_probe_model_t *add_model(apr_pool_t *p, llmgw_probe_t *r,
                                      const char *name, apr_size_t len)
{
    llmgw_probe_model_t *m = apr_array_push(r->models);

    memset(m, 0, sizeof(*m));
    m->name = apr_pstrmemdup(p, name, len);
    m->size = m->size_vram = -1;
    m->running = m->waiting = -1;
    m->kv_usage = -1.0;
    return m;
}

/* A status every kind reads the same way: 429 is a member saying it is
 * full; any other status than the ones the kind expects means down. */
static llmgw_probe_t *unexpected_status(llmgw_probe_t *r)
{
    if (r->http_status == 429) {
        return take(r, LLMGW_HS_BUSY, LLMGW_PK_STATE, "429 too busy");
    }
    if (r->http_status >= 500) {
        return refuse(r, "5xx answer");
    }
    return refuse(r, "unexpected status");
}

/* ---- JSON helpers ----------------------------------------------------- */

static llmgw_json_t *parse_json(apr_pool_t *p, llmgw_probe_t *r,
                                const char *body, apr_size_t len)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j;

    if (len > LLMGW_PROBE_MAX_BODY) {
        refuse(r, "answer too large");
        return NULL;
    }
    if (!body || !len) {
        refuse(r, "empty answer");
        return NULL;
    }
    j = llmgw_json_parse(p, body, len, &err, &msg);
    if (!j) {
        refuse(r, "answer is not JSON");
    }
    return j;
}

/* An optional integer member at least 0: 1 and *out when there, 0 when
 * absent (or null), -1 when it is something else. */
static int opt_count(const llmgw_json_t *o, const char *key, apr_int64_t *out)
{
    switch (llmgw_json_type(o, key, NULL)) {
    case LLMGW_JSON_MISSING:
    case LLMGW_JSON_NULL: return 0;
    case LLMGW_JSON_INT:
        *out = llmgw_json_getl(o, -1, key, NULL);
        return *out >= 0 ? 1 : -1;
    default: return -1;
    }
}

/* A model's name: the string member key, within bounds. 1: *name set;
 * 0: too long, skip it; -1: not a non-empty string. */
static int model_name(const llmgw_json_t *o, const char *key,
                      const char **name, apr_size_t *len)
{
    *name = llmgw_json_gets(o, key, NULL);
    if (!*name || !**name) {
        return -1;
    }
    *len = strlen(*name);
    return *len <= LLMGW_PROBE_MAX_NAME ? 1 : 0;
}

/* The array under key of the object j, bounded; NULL refuses r. */
/* The model list at key of a 200 answer that is a JSON object; NULL when
 * there is none (r then says why). */
static llmgw_json_t *model_list(apr_pool_t *p, llmgw_probe_t *r,
                                const char *body, apr_size_t len,
                                const char *key)
{
    llmgw_json_t *j, *a;

    if (r->http_status != 200) {
        unexpected_status(r);
        return NULL;
    }
    if (!(j = parse_json(p, r, body, len))) {
        return NULL;
    }
    if (llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT
        || llmgw_json_type(j, key, NULL) != LLMGW_JSON_ARRAY) {
        refuse(r, "no model list");
        return NULL;
    }
    a = llmgw_json_getj(j, key, NULL);
    if (llmgw_json_array_len(a) > LLMGW_PROBE_MAX_MODELS) {
        refuse(r, "too many models");
        return NULL;
    }
    return a;
}

/* ---- Ollama ----------------------------------------------------------- */

/* One entry of /api/ps or /api/tags; 0 or a reason to refuse. */
static const char *ollama_model(apr_pool_t *p, llmgw_probe_t *r,
                                const llmgw_json_t *o, unsigned flag)
{
    const char *name, *when;
    apr_size_t len;
    llmgw_probe_model_t *m;
    apr_int64_t size = -1, vram = -1;
    apr_time_t expires = 0;
    int named;

    if (llmgw_json_type(o, NULL) != LLMGW_JSON_OBJECT) {
        return "a model is not an object";
    }
    /* Ollama sends both; "name" is what clients ask for. */
    named = model_name(o, "name", &name, &len);
    if (named < 0) {
        named = model_name(o, "model", &name, &len);
    }
    if (named < 0) {
        return "a model has no name";
    }
    if (opt_count(o, "size", &size) < 0
        || opt_count(o, "size_vram", &vram) < 0) {
        return "a model's size is not a count";
    }
    switch (llmgw_json_type(o, "expires_at", NULL)) {
    case LLMGW_JSON_MISSING:
    case LLMGW_JSON_NULL: break;
    case LLMGW_JSON_STRING:
        when = llmgw_json_gets(o, "expires_at", NULL);
        if (llmgw_probe_rfc3339(when, strlen(when), &expires) != 0) {
            return "expires_at is not an RFC 3339 time";
        }
        break;
    default: return "expires_at is not a string";
    }
    if (!named) {
        r->models_skipped++;
        return NULL;
    }
    m = add_model(p, r, name, len);
    m->flags = flag;
    m->size = size;
    m->size_vram = vram;
    m->expires_at = expires;
    return NULL;
}

static llmgw_probe_t *ollama_list(apr_pool_t *p, llmgw_probe_t *r,
                                  const char *body, apr_size_t len,
                                  unsigned flag, unsigned knows)
{
    llmgw_json_t *a;
    apr_size_t i, n;
    const char *why;

    if (!(a = model_list(p, r, body, len, "models"))) {
        return r;
    }
    n = llmgw_json_array_len(a);
    for (i = 0; i < n; i++) {
        if ((why = ollama_model(p, r, llmgw_json_array_get(a, i), flag))) {
            return refuse(r, why);
        }
    }
    return take(r, LLMGW_HS_READY, LLMGW_PK_STATE | knows, NULL);
}

/* ---- llama.cpp -------------------------------------------------------- */

/* Does this 503 say the model is loading? Today's server answers
 * {"error":{"code":503,"message":"Loading model",...}}, servers of early
 * 2024 {"status":"loading model"}. */
static int says_loading(const llmgw_json_t *j)
{
    const char *m = llmgw_json_gets(j, "error", "message", NULL);
    const char *s = llmgw_json_gets(j, "status", NULL);

    return (m && strcasecmp(m, "Loading model") == 0)
           || (s && strcasecmp(s, "loading model") == 0);
}

/* The 503 of /health or /slots: loading, busy, or down. */
static llmgw_probe_t *llamacpp_503(apr_pool_t *p, llmgw_probe_t *r,
                                   const char *body, apr_size_t len)
{
    llmgw_json_t *j = parse_json(p, r, body, len);
    const char *s;

    if (!j) {
        return refuse(r, "503 answer");
    }
    if (says_loading(j)) {
        return take(r, LLMGW_HS_LOADING, LLMGW_PK_STATE, "loading model");
    }
    /* Early 2024 /health?fail_on_no_slot=1: all slots taken. */
    s = llmgw_json_gets(j, "status", NULL);
    if (s && strcmp(s, "no slot available") == 0) {
        return take(r, LLMGW_HS_BUSY, LLMGW_PK_STATE, "no slot available");
    }
    return refuse(r, "503 answer");
}

static llmgw_probe_t *llamacpp_health(apr_pool_t *p, llmgw_probe_t *r,
                                      const char *body, apr_size_t len)
{
    llmgw_json_t *j;
    const char *s;
    apr_int64_t idle = -1, busy = -1;
    unsigned knows = LLMGW_PK_STATE;
    int a, b;

    if (r->http_status == 503) {
        return llamacpp_503(p, r, body, len);
    }
    if (r->http_status != 200) {
        return unexpected_status(r);
    }
    if (!(j = parse_json(p, r, body, len))) {
        return r;
    }
    s = llmgw_json_gets(j, "status", NULL);
    if (!s || strcmp(s, "ok") != 0) {
        return refuse(r, "health is not ok");
    }
    /* Servers of early 2024 also counted their slots here. */
    a = opt_count(j, "slots_idle", &idle);
    b = opt_count(j, "slots_processing", &busy);
    if (a < 0 || b < 0 || a != b) {
        return refuse(r, "slot counts are not counts");
    }
    if (a > 0) {
        if (idle > LLMGW_PROBE_MAX_SLOTS || busy > LLMGW_PROBE_MAX_SLOTS) {
            return refuse(r, "too many slots");
        }
        r->slots_total = idle + busy;
        r->slots_busy = busy;
        knows |= LLMGW_PK_SLOTS;
    }
    return take(r, LLMGW_HS_READY, knows, NULL);
}

/* Whether one entry of /slots is busy: 1, 0, or -1 when it does not say.
 * Servers since late 2024 have "is_processing"; before, "state" was 0
 * for idle and more for the stages of a task (one "processing" value
 * until mid 2024); some versions have both. */
static int slot_busy(const llmgw_json_t *o)
{
    apr_int64_t state;

    if (llmgw_json_type(o, NULL) != LLMGW_JSON_OBJECT) {
        return -1;
    }
    switch (llmgw_json_type(o, "is_processing", NULL)) {
    case LLMGW_JSON_BOOL:
        return llmgw_json_getb(o, 0, "is_processing", NULL) ? 1 : 0;
    case LLMGW_JSON_MISSING: break;
    default: return -1;
    }
    if (llmgw_json_type(o, "state", NULL) != LLMGW_JSON_INT) {
        return -1;
    }
    state = llmgw_json_getl(o, -1, "state", NULL);
    return state < 0 ? -1 : state > 0;
}

static llmgw_probe_t *llamacpp_slots(apr_pool_t *p, llmgw_probe_t *r,
                                     const char *body, apr_size_t len)
{
    llmgw_json_t *j;
    apr_size_t i, n;
    apr_int64_t busy = 0;

    if (r->http_status == 503) {
        return llamacpp_503(p, r, body, len);
    }
    if (r->http_status == 501) {
        /* Started with --no-slots: up, but it keeps its slots to itself. */
        return take(r, LLMGW_HS_READY, LLMGW_PK_STATE, "slots not shown");
    }
    if (r->http_status != 200) {
        return unexpected_status(r);
    }
    if (!(j = parse_json(p, r, body, len))) {
        return r;
    }
    if (llmgw_json_type(j, NULL) != LLMGW_JSON_ARRAY) {
        return refuse(r, "slots are not an array");
    }
    n = llmgw_json_array_len(j);
    if (n == 0 || n > LLMGW_PROBE_MAX_SLOTS) {
        return refuse(r, n ? "too many slots" : "no slots");
    }
    for (i = 0; i < n; i++) {
        int b = slot_busy(llmgw_json_array_get(j, i));

        if (b < 0) {
            return refuse(r, "a slot does not say whether it is busy");
        }
        busy += b;
    }
    r->slots_total = (apr_int64_t)n;
    r->slots_busy = busy;
    return take(r, busy == r->slots_total ? LLMGW_HS_BUSY : LLMGW_HS_READY,
                LLMGW_PK_STATE | LLMGW_PK_SLOTS,
                busy == r->slots_total ? "every slot is busy" : NULL);
}

/* ---- OpenAI /v1/models ------------------------------------------------ */

/* llama.cpp's router (and its /models) says per model "status":
 * {"value":"loaded"|"loading"|"unloaded"|"sleeping"|"downloading"}.
 * *flags gets the model's LLMGW_PM_*; 1 if it had a status, 0 if not,
 * -1 if it has one that does not read. */
static int model_status(const llmgw_json_t *o, unsigned *flags)
{
    const char *v;

    *flags = LLMGW_PM_AVAILABLE;
    switch (llmgw_json_type(o, "status", NULL)) {
    case LLMGW_JSON_MISSING:
    case LLMGW_JSON_NULL: return 0;
    case LLMGW_JSON_OBJECT: break;
    default: return -1;
    }
    if (!(v = llmgw_json_gets(o, "status", "value", NULL))) {
        return -1;
    }
    if (strcmp(v, "loaded") == 0) {
        *flags |= LLMGW_PM_LOADED;
    }
    else if (strcmp(v, "loading") == 0) {
        *flags |= LLMGW_PM_LOADING;
    }
    else if (strcmp(v, "unloaded") != 0 && strcmp(v, "sleeping") != 0
             && strcmp(v, "downloading") != 0) {
        return -1;
    }
    return 1;
}

static llmgw_probe_t *openai_models(apr_pool_t *p, llmgw_probe_t *r,
                                    const char *body, apr_size_t len)
{
    llmgw_json_t *a;
    apr_size_t i, n, nlen;
    unsigned knows = LLMGW_PK_STATE | LLMGW_PK_AVAILABLE;

    if (!(a = model_list(p, r, body, len, "data"))) {
        return r;
    }
    n = llmgw_json_array_len(a);
    for (i = 0; i < n; i++) {
        llmgw_json_t *o = llmgw_json_array_get(a, i);
        const char *id;
        unsigned flags;
        int named, st;

        if (llmgw_json_type(o, NULL) != LLMGW_JSON_OBJECT) {
            return refuse(r, "a model is not an object");
        }
        if ((named = model_name(o, "id", &id, &nlen)) < 0) {
            return refuse(r, "a model has no id");
        }
        if ((st = model_status(o, &flags)) < 0) {
            return refuse(r, "a model's status does not read");
        }
        if (st > 0) {
            knows |= LLMGW_PK_LOADED;
        }
        if (!named) {
            r->models_skipped++;
            continue;
        }
        add_model(p, r, id, nlen)->flags = flags;
    }
    /* A status on some models only would leave the others' loaded state
     * unknown: then nothing is known about what is loaded. */
    if (knows & LLMGW_PK_LOADED) {
        for (i = 0; i < n; i++) {
            unsigned flags;

            if (model_status(llmgw_json_array_get(a, i), &flags) == 0) {
                knows &= ~(unsigned)LLMGW_PK_LOADED;
                break;
            }
        }
    }
    return take(r, LLMGW_HS_READY, knows, NULL);
}

/* ---- RFC 3339 --------------------------------------------------------- */

static int digits(const char *s, int n, int *out)
{
    int i, v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static apr_int64_t days_from_civil(apr_int64_t y, int m, int d)
{
    apr_int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

int llmgw_probe_rfc3339(const char *s, apr_size_t len, apr_time_t *out)
{
    const char *end, *q;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    apr_int64_t usec = 0, scale = 100000, secs;

    /* YYYY-MM-DDTHH:MM:SS is 19 characters. */
    if (!s || len < 20 || digits(s, 4, &y) || s[4] != '-'
        || digits(s + 5, 2, &mo) || s[7] != '-' || digits(s + 8, 2, &d)
        || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h)
        || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':'
        || digits(s + 17, 2, &sec)) {
        return -1;
    }
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)
        || h > 23 || mi > 59 || sec > 60) {
        return -1;
    }
    end = s + len;
    q = s + 19;
    if (*q == '.') {
        const char *f = ++q;

        for (; q < end && *q >= '0' && *q <= '9'; q++) {
            usec += (*q - '0') * scale;
            scale /= 10;
        }
        if (q == f) {
            return -1;
        }
    }
    if (q < end && (*q == 'Z' || *q == 'z')) {
        q++;
    }
    else if (q < end && (*q == '+' || *q == '-')) {
        sign = *q == '-' ? -1 : 1;
        if (end - q < 6 || digits(q + 1, 2, &oh) || q[3] != ':'
            || digits(q + 4, 2, &om) || oh > 23 || om > 59) {
            return -1;
        }
        q += 6;
    }
    else {
        return -1;
    }
    if (q != end) {
        return -1;
    }
    if (sec == 60) {
        sec = 59; /* a leap second: as its last second */
    }
    secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
           - sign * (oh * 3600 + om * 60);
    *out = secs * APR_USEC_PER_SEC + usec;
    return 0;
}

/* ---- vLLM /metrics ---------------------------------------------------- */

typedef enum {
    VM_OTHER = 0,
    VM_RUNNING, /* vllm:num_requests_running */
    VM_WAITING, /* vllm:num_requests_waiting */
    VM_KV,      /* vllm:kv_cache_usage_perc (0.9 on) */
    VM_GPU_KV   /* vllm:gpu_cache_usage_perc (before) */
} vmetric_t;

static vmetric_t vllm_metric(const llmgw_prom_sample_t *s)
{
    static const struct {
        const char *name;
        vmetric_t m;
    } names[] = {
        { "vllm:num_requests_running", VM_RUNNING },
        { "vllm:num_requests_waiting", VM_WAITING },
        { "vllm:kv_cache_usage_perc", VM_KV },
        { "vllm:gpu_cache_usage_perc", VM_GPU_KV },
    };
    apr_size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (s->name_len == strlen(names[i].name)
            && memcmp(s->name, names[i].name, s->name_len) == 0) {
            return names[i].m;
        }
    }
    return VM_OTHER;
}

/* The value of label name in s, or NULL. */
static const char *sample_label(const llmgw_prom_sample_t *s, const char *name,
                                apr_size_t *len)
{
    apr_size_t n = strlen(name);
    int i;

    for (i = 0; i < s->nlabels; i++) {
        if (s->label_name_len[i] == n
            && memcmp(s->label_name[i], name, n) == 0) {
            *len = s->label_value_len[i];
            return s->label_value[i];
        }
    }
    return NULL;
}

/* What the gauges say, per model and for the member. */
typedef struct {
    apr_int64_t running, waiting; /* -1: no sample */
    double kv, gpu_kv;            /* -1: no sample */
} vsum_t;

static void vsum_init(vsum_t *v)
{
    v->running = v->waiting = -1;
    v->kv = v->gpu_kv = -1.0;
}

/* Engines (data parallel) each have their series: counts add up, the
 * fullest cache is what limits. */
static void vsum_add(vsum_t *v, vmetric_t m, double value)
{
    switch (m) {
    case VM_RUNNING:
        v->running =
            (v->running < 0 ? 0 : v->running) + (apr_int64_t)(value + 0.5);
        break;
    case VM_WAITING:
        v->waiting =
            (v->waiting < 0 ? 0 : v->waiting) + (apr_int64_t)(value + 0.5);
        break;
    case VM_KV: v->kv = value > v->kv ? value : v->kv; break;
    case VM_GPU_KV: v->gpu_kv = value > v->gpu_kv ? value : v->gpu_kv; break;
    default: break;
    }
}

static double vsum_kv(const vsum_t *v)
{
    return v->kv >= 0.0 ? v->kv : v->gpu_kv;
}

/* The per-model sums, by name; a name too long to keep has none. Those
 * kept are also in sums, in the order of r->models. */
static vsum_t *vllm_model(apr_pool_t *p, llmgw_probe_t *r, apr_hash_t *by,
                          apr_array_header_t *sums, const char *name,
                          apr_size_t len, int *full)
{
    vsum_t *v = apr_hash_get(by, name, (apr_ssize_t)len);
    char *key;

    if (v) {
        return v->running == -2 ? NULL : v;
    }
    if (apr_hash_count(by) >= LLMGW_PROBE_MAX_MODELS) {
        *full = 1;
        return NULL;
    }
    v = apr_palloc(p, sizeof(*v));
    vsum_init(v);
    key = apr_pstrmemdup(p, name, len);
    apr_hash_set(by, key, (apr_ssize_t)len, v);
    /* Names are promised valid UTF-8 without a NUL: a label's bytes are
     * not (Prometheus text may hold anything). */
    if (len > LLMGW_PROBE_MAX_NAME || memchr(name, '\0', len)
        || llmgw_json_utf8_clean(p, name, len, NULL) != name) {
        v->running = -2; /* marks a name left out */
        r->models_skipped++;
        return NULL;
    }
    add_model(p, r, key, len)->flags = LLMGW_PM_LOADED;
    APR_ARRAY_PUSH(sums, vsum_t *) = v;
    return v;
}

/* A gauge value that reads: finite, at least 0, a fraction for the KV
 * cache and a sane count for requests. */
static int vllm_value_ok(vmetric_t m, double v)
{
    if (v != v || v < 0.0) {
        return 0;
    }
    return m == VM_KV || m == VM_GPU_KV ? v <= 1.0 : v <= 1e9;
}

static llmgw_probe_t *vllm_metrics(apr_pool_t *p, llmgw_probe_t *r,
                                   const char *body, apr_size_t len)
{
    const char *pos = body, *end = body + len;
    apr_hash_t *by = apr_hash_make(p);
    apr_array_header_t *sums = apr_array_make(p, 4, sizeof(vsum_t *));
    llmgw_prom_sample_t s;
    vsum_t all;
    unsigned knows = LLMGW_PK_STATE;
    int rc, full = 0, i;

    if (r->http_status != 200) {
        return unexpected_status(r);
    }
    if (len > LLMGW_PROBE_MAX_METRICS) {
        return refuse(r, "answer too large");
    }
    if (!body || !len) {
        return refuse(r, "empty answer");
    }
    vsum_init(&all);
    while ((rc = llmgw_prom_next(p, &pos, end, &s)) > 0) {
        vmetric_t m = vllm_metric(&s);
        const char *model;
        apr_size_t mlen;
        vsum_t *v;

        if (m == VM_OTHER) {
            continue;
        }
        if (!vllm_value_ok(m, s.value)) {
            return refuse(r, "a vLLM gauge is out of range");
        }
        vsum_add(&all, m, s.value);
        if ((model = sample_label(&s, "model_name", &mlen))) {
            if ((v = vllm_model(p, r, by, sums, model, mlen, &full))) {
                vsum_add(v, m, s.value);
            }
            if (full) {
                return refuse(r, "too many models");
            }
        }
    }
    if (rc < 0) {
        return refuse(r, "a metrics line does not read");
    }
    if (all.running < 0 && all.waiting < 0 && vsum_kv(&all) < 0.0) {
        return refuse(r, "no vLLM metrics");
    }
    for (i = 0; i < r->models->nelts; i++) {
        llmgw_probe_model_t *pm =
            &APR_ARRAY_IDX(r->models, i, llmgw_probe_model_t);
        const vsum_t *v = APR_ARRAY_IDX(sums, i, vsum_t *);

        pm->running = v->running;
        pm->waiting = v->waiting;
        pm->kv_usage = vsum_kv(v);
    }
    r->running = all.running;
    r->waiting = all.waiting;
    r->kv_usage = vsum_kv(&all);
    if (all.running >= 0 || all.waiting >= 0) {
        knows |= LLMGW_PK_QUEUE;
    }
    if (r->kv_usage >= 0.0) {
        knows |= LLMGW_PK_KV;
    }
    if (apr_hash_count(by)) {
        knows |= LLMGW_PK_LOADED;
    }
    return take(r, LLMGW_HS_READY, knows, NULL);
}

/* ---- dispatch --------------------------------------------------------- */

llmgw_probe_t *llmgw_probe_parse(apr_pool_t *p, llmgw_probe_kind_t kind,
                                 int http_status, const char *body,
                                 apr_size_t len)
{
    llmgw_probe_t *r = result(p, kind, http_status);

    if (http_status <= 0) {
        return refuse(r, "no answer");
    }
    switch (kind) {
    case LLMGW_PROBE_OLLAMA_PS:
        return ollama_list(p, r, body, len, LLMGW_PM_LOADED, LLMGW_PK_LOADED);
    case LLMGW_PROBE_OLLAMA_TAGS:
        return ollama_list(p, r, body, len, LLMGW_PM_AVAILABLE,
                           LLMGW_PK_AVAILABLE);
    case LLMGW_PROBE_LLAMACPP_HEALTH: return llamacpp_health(p, r, body, len);
    case LLMGW_PROBE_LLAMACPP_SLOTS: return llamacpp_slots(p, r, body, len);
    case LLMGW_PROBE_VLLM_METRICS: return vllm_metrics(p, r, body, len);
    case LLMGW_PROBE_OPENAI_MODELS: return openai_models(p, r, body, len);
    default: return refuse(r, "no such probe");
    }
}
