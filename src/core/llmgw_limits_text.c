/* llmgw_limits_text: the limits' text side: the directives' values, the
 * subjects' names, OpenAI's x-ratelimit-* headers and the 429 bodies. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_limits.h"
#include "llmgw_sha256.h"

/* ---------------------------------------------------------------------
 * Values
 */

/* s as a decimal integer of 1..max, digits only. */
static int parse_count(const char *s, apr_int64_t max, apr_int64_t *out)
{
    apr_int64_t v = 0;

    if (!*s || *s == '0') {
        return 0;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10) {
            return 0;
        }
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 1;
}

/* s as a decimal amount with up to 6 decimals ("12", "0.15"), in
 * micro-units, 0..max. */
static int parse_micro(const char *s, apr_int64_t max, apr_int64_t *out)
{
    apr_int64_t v = 0;
    int frac = -1, digits = 0;

    for (; *s; s++) {
        if (*s == '.' && frac < 0 && digits) {
            frac = 0;
            continue;
        }
        if (*s < '0' || *s > '9' || frac >= 6 || v > (max - (*s - '0')) / 10) {
            return 0;
        }
        v = v * 10 + (*s - '0');
        digits++;
        frac += frac >= 0;
    }
    if (!digits || frac == 0) {
        return 0;
    }
    for (frac = frac < 0 ? 0 : frac; frac < 6; frac++) {
        if (v > max / 10) {
            return 0;
        }
        v *= 10;
    }
    *out = v;
    return 1;
}

/* The value of "name=value" when word starts with name and '='. */
static const char *value_of(const char *word, const char *name)
{
    apr_size_t n = strlen(name);

    return strncmp(word, name, n) == 0 && word[n] == '=' ? word + n + 1 : NULL;
}

const char *llmgw_limits_parse_rate(apr_pool_t *p, int argc,
                                    const char *const *argv,
                                    llmgw_limits_conf_t *c)
{
    static const char *const names[] = { "rpm", "tpm", "concurrent" };
    apr_int64_t *slot[3];
    int i, k, seen = 0;

    slot[0] = &c->rpm;
    slot[1] = &c->tpm;
    slot[2] = &c->concurrent;
    if (argc < 1) {
        return "LLMRateLimit: give at least one limit, e.g. "
               "LLMRateLimit rpm=600 tpm=200000 concurrent=8";
    }
    for (i = 0; i < argc; i++) {
        for (k = 0; k < 3 && !value_of(argv[i], names[k]); k++) {
        }
        if (k == 3) {
            return apr_psprintf(p,
                                "LLMRateLimit: unknown '%s'; use rpm=N, "
                                "tpm=N and concurrent=N, e.g. LLMRateLimit "
                                "rpm=600 tpm=200000",
                                argv[i]);
        }
        if (seen & 1 << k) {
            return apr_psprintf(p, "LLMRateLimit: %s given twice", names[k]);
        }
        if (!parse_count(value_of(argv[i], names[k]), LLMGW_LIMITS_RATE_MAX,
                         slot[k])) {
            return apr_psprintf(p,
                                "LLMRateLimit: '%s' must be a whole "
                                "number from 1 to 1000000000, e.g. %s=600",
                                argv[i], names[k]);
        }
        seen |= 1 << k;
    }
    return NULL;
}

static int period_of(const char *s)
{
    return !strcmp(s, "hour")    ? LLMGW_PER_HOUR
           : !strcmp(s, "day")   ? LLMGW_PER_DAY
           : !strcmp(s, "month") ? LLMGW_PER_MONTH
                                 : 0;
}

/* Puts b in c: over the budget of the same unit and period, else in the
 * first free place. */
static const char *add_budget(llmgw_limits_conf_t *c,
                              const llmgw_budget_conf_t *b)
{
    int i, free_at = -1;

    for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
        if (c->budget[i].unit == b->unit && c->budget[i].per == b->per) {
            c->budget[i] = *b;
            return NULL;
        }
        if (!c->budget[i].unit && free_at < 0) {
            free_at = i;
        }
    }
    if (free_at < 0) {
        return "LLMBudget: at most 4 budgets (one per unit and period)";
    }
    c->budget[free_at] = *b;
    return NULL;
}

const char *llmgw_limits_parse_budget(apr_pool_t *p, int argc,
                                      const char *const *argv,
                                      llmgw_limits_conf_t *c)
{
    static const char *usage = "use tokens=N or cost=AMOUNT, and "
                               "per=hour|day|month, e.g. LLMBudget "
                               "tokens=2000000 per=day";
    llmgw_budget_conf_t b = { 0, 0, 0 };
    const char *v, *why = NULL;
    int i;

    for (i = 0; i < argc && !why; i++) {
        if ((v = value_of(argv[i], "tokens")) != NULL && !b.unit) {
            b.unit = LLMGW_BUDGET_TOKENS;
            if (!parse_count(v, LLMGW_LIMITS_AMOUNT_MAX, &b.limit)) {
                why = " must be a whole number of tokens, at least 1, e.g. "
                      "tokens=2000000";
            }
        }
        else if ((v = value_of(argv[i], "cost")) != NULL && !b.unit) {
            b.unit = LLMGW_BUDGET_COST;
            if (!parse_micro(v, LLMGW_LIMITS_AMOUNT_MAX, &b.limit)
                || b.limit < 1) {
                why = " must be an amount above 0 with at most 6 decimals, "
                      "e.g. cost=50.00";
            }
        }
        else if ((v = value_of(argv[i], "per")) != NULL && !b.per) {
            if (!(b.per = period_of(v))) {
                why = ": the period is hour, day or month, e.g. per=day";
            }
        }
        else {
            return apr_psprintf(p, "LLMBudget: unexpected '%s'; %s", argv[i],
                                usage);
        }
    }
    if (why) { /* about the argument last read */
        return apr_psprintf(p, "LLMBudget: '%s'%s", argv[i - 1], why);
    }
    if (!b.unit || !b.per) {
        return apr_psprintf(p, "LLMBudget: %s", usage);
    }
    return add_budget(c, &b);
}

const char *llmgw_limits_parse_price(apr_pool_t *p, int argc,
                                     const char *const *argv,
                                     llmgw_price_t *pr)
{
    int i, seen = 0;

    for (i = 0; i < argc; i++) {
        const char *in = value_of(argv[i], "in");
        const char *out = value_of(argv[i], "out");
        int k = in ? 1 : out ? 2 : 0;

        if (!k || (seen & k)) {
            return apr_psprintf(p,
                                "LLMPrice: unexpected '%s'; give in= and "
                                "out= once each, in currency units per "
                                "million tokens, e.g. LLMPrice \"llama3*\" "
                                "in=0.15 out=0.60",
                                argv[i]);
        }
        if (!parse_micro(in ? in : out, LLMGW_LIMITS_PRICE_MAX,
                         in ? &pr->in : &pr->out)) {
            return apr_psprintf(p,
                                "LLMPrice: '%s' must be an amount with at "
                                "most 6 decimals, e.g. in=0.15",
                                argv[i]);
        }
        seen |= k;
    }
    if (seen != 3) {
        return "LLMPrice: give both in= and out=, e.g. LLMPrice \"llama3*\" "
               "in=0.15 out=0.60";
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * Names
 */

static int plain(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return 0;
        }
    }
    return 1;
}

const char *llmgw_limits_subject_name(apr_pool_t *p, llmgw_subject_kind_t kind,
                                      const char *a, const char *b)
{
    static const char *const prefix[] = { "?",         "key",  "route",
                                          "key+route", "user", "model" };
    const char *pre = kind >= LLMGW_SUBJECT_KEY && kind <= LLMGW_SUBJECT_MODEL
                          ? prefix[kind]
                          : prefix[0];
    const char *rest;

    a = a ? a : "";
    rest = kind == LLMGW_SUBJECT_KEY_ROUTE
               ? apr_pstrcat(p, a, "\037", b ? b : "", NULL)
               : a;
    if ((kind == LLMGW_SUBJECT_KEY_ROUTE ? plain(a) && plain(b ? b : "")
                                         : plain(a))
        && strlen(pre) + 1 + strlen(rest) <= LLMGW_LIMITS_NAME_MAX) {
        return apr_pstrcat(p, pre, ":", rest, NULL);
    }
    return apr_pstrcat(p, pre, "#", llmgw_sha256_hex(p, rest, strlen(rest)),
                       NULL);
}

/* ---------------------------------------------------------------------
 * Headers and errors
 */

const char *llmgw_limits_duration(char *buf, apr_size_t size, apr_time_t d)
{
    /* Rounded up to the millisecond, without overflow near 2^63. */
    apr_int64_t ms = d > 0 ? d / 1000 + (d % 1000 != 0) : 0;
    apr_int64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60;
    int frac = (int)(ms % 1000), len = 0;
    char fb[8] = "";

    if (ms < 1000) {
        apr_snprintf(buf, size, ms ? "%" APR_INT64_T_FMT "ms" : "0s", ms);
        return buf;
    }
    if (frac) {
        apr_snprintf(fb, sizeof(fb), ".%03d", frac);
        for (len = 4; fb[len - 1] == '0'; len--) {
        }
        fb[len] = '\0';
    }
    if (h) {
        apr_snprintf(buf, size,
                     "%" APR_INT64_T_FMT "h%" APR_INT64_T_FMT
                     "m%" APR_INT64_T_FMT "%ss",
                     h, m, s, fb);
    }
    else if (m) {
        apr_snprintf(buf, size, "%" APR_INT64_T_FMT "m%" APR_INT64_T_FMT "%ss",
                     m, s, fb);
    }
    else {
        apr_snprintf(buf, size, "%" APR_INT64_T_FMT "%ss", s, fb);
    }
    return buf;
}

static void set_num(apr_table_t *h, const char *name, apr_int64_t v)
{
    char b[24];

    apr_snprintf(b, sizeof(b), "%" APR_INT64_T_FMT, v);
    apr_table_set(h, name, b);
}

static void set_dur(apr_table_t *h, const char *name, apr_time_t d)
{
    char b[32];

    apr_table_set(h, name, llmgw_limits_duration(b, sizeof(b), d));
}

void llmgw_limits_headers(apr_table_t *h, const llmgw_limits_verdict_t *v)
{
    if (v->limit_requests >= 0) {
        set_num(h, "x-ratelimit-limit-requests", v->limit_requests);
        set_num(h, "x-ratelimit-remaining-requests", v->remaining_requests);
        set_dur(h, "x-ratelimit-reset-requests", v->reset_requests);
    }
    if (v->limit_tokens >= 0) {
        set_num(h, "x-ratelimit-limit-tokens", v->limit_tokens);
        set_num(h, "x-ratelimit-remaining-tokens", v->remaining_tokens);
        set_dur(h, "x-ratelimit-reset-tokens", v->reset_tokens);
    }
    if (v->refused != LLMGW_LIMIT_OK) {
        set_num(h, "Retry-After", v->retry_after);
    }
}

static const char *per_name(int per)
{
    return per == LLMGW_PER_HOUR    ? "hour"
           : per == LLMGW_PER_MONTH ? "month"
                                    : "day";
}

/* Micro-units as a decimal amount: 12500000 -> "12.50". */
static const char *money(apr_pool_t *p, apr_int64_t micro)
{
    char *s = apr_psprintf(p, "%" APR_INT64_T_FMT ".%06" APR_INT64_T_FMT,
                           micro / 1000000, micro % 1000000);
    apr_size_t n = strlen(s);

    while (s[n - 1] == '0' && s[n - 3] != '.') {
        s[--n] = '\0';
    }
    return s;
}

static const char *budget_message(apr_pool_t *p,
                                  const llmgw_limits_verdict_t *v,
                                  const char *retry)
{
    int cost = v->refused == LLMGW_LIMIT_BUDGET_COST;
    const char *what = cost ? "cost" : "token";
    const char *lim = cost ? money(p, v->limit)
                           : apr_psprintf(p, "%" APR_INT64_T_FMT, v->limit);
    const char *used = cost ? money(p, v->used)
                            : apr_psprintf(p, "%" APR_INT64_T_FMT, v->used);
    const char *req = cost
                          ? money(p, v->requested)
                          : apr_psprintf(p, "%" APR_INT64_T_FMT, v->requested);

    if (v->spent) {
        return apr_psprintf(p,
                            "You exceeded your %s budget for this %s: "
                            "Limit %s, Used %s, Requested %s. It resets in "
                            "%s.",
                            what, per_name(v->per), lim, used, req, retry);
    }
    return apr_psprintf(p,
                        "Your %s budget for this %s is held by requests "
                        "in flight: Limit %s, Used %s (reserved included), "
                        "Requested %s. Please try again in %s.",
                        what, per_name(v->per), lim, used, req, retry);
}

int llmgw_limits_error(apr_pool_t *p, const llmgw_limits_verdict_t *v,
                       llmgw_error_t *err)
{
    const char *type = "requests", *code = "rate_limit_exceeded", *msg;
    char retry[32];

    llmgw_limits_duration(retry, sizeof(retry),
                          v->retry_after * APR_USEC_PER_SEC);
    switch (v->refused) {
    case LLMGW_LIMIT_RPM:
        msg = apr_psprintf(p,
                           "Rate limit reached for requests per minute "
                           "(RPM): Limit %" APR_INT64_T_FMT
                           ", Used %" APR_INT64_T_FMT
                           ", Requested 1. Please try again "
                           "in %s.",
                           v->limit, v->used, retry);
        break;
    case LLMGW_LIMIT_TPM:
        type = "tokens";
        msg =
            v->too_large
                ? apr_psprintf(p,
                               "Request too large for tokens per minute "
                               "(TPM): Limit %" APR_INT64_T_FMT
                               ", Requested %" APR_INT64_T_FMT
                               ". The input or output tokens "
                               "must be reduced in order to run successfully.",
                               v->limit, v->requested)
                : apr_psprintf(p,
                               "Rate limit reached for tokens per minute "
                               "(TPM): Limit %" APR_INT64_T_FMT
                               ", Used %" APR_INT64_T_FMT
                               ", Requested %" APR_INT64_T_FMT
                               ". Please try again in %s.",
                               v->limit, v->used, v->requested, retry);
        break;
    case LLMGW_LIMIT_CONCURRENT:
        msg =
            apr_psprintf(p,
                         "Too many requests in flight: Limit %" APR_INT64_T_FMT
                         ". Please try again in %s.",
                         v->limit, retry);
        break;
    case LLMGW_LIMIT_BUDGET_TOKENS:
    case LLMGW_LIMIT_BUDGET_COST:
        type = v->spent ? "insufficient_quota" : "tokens";
        code = v->spent ? "insufficient_quota" : code;
        msg = budget_message(p, v, retry);
        break;
    default:
        msg = "The gateway cannot admit more requests right now. Please "
              "try again in 1s.";
        break;
    }
    return llmgw_error_set(err, 429, type, NULL, code, msg);
}
