/* llmgw_conf: strict parsers: the whole value must be read, numbers are
 * digits in range (no overflow), and an error shows a good value. */
#include <string.h>
#include <strings.h>

#include <apr_strings.h>

#include "llmgw_conf.h"

/* names joined by ", ", each with suffix. */
static const char *join(apr_pool_t *p, const char *const *names,
                        const char *suffix)
{
    const char *out = "";
    int i;

    for (i = 0; names[i]; i++) {
        out = apr_pstrcat(p, out, i ? ", " : "", names[i], suffix, NULL);
    }
    return out;
}

static const char *bad(apr_pool_t *p, const char *what, const char *arg,
                       const char *kind, const char *example)
{
    return apr_psprintf(p, "%s: '%s' is not %s; e.g. %s", what, arg, kind,
                        example);
}

/* Decimal digits (an optional '-') in [min, max]; *end past them. The
 * magnitude is bounded by the range's end on its side before each digit
 * goes in, so it never wraps (a wrapped one could land in the range). */
static int digits(const char *s, const char **end, apr_int64_t min,
                  apr_int64_t max, apr_int64_t *out)
{
    int neg = *s == '-';
    apr_uint64_t v = 0, lim = neg ? (apr_uint64_t)(-(min + 1)) + 1
                                  : (apr_uint64_t)max;

    s += neg;
    if (*s < '0' || *s > '9' || (neg ? min >= 0 : max < 0)) {
        return 0;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        apr_uint64_t d = (apr_uint64_t)(*s - '0');

        if (v > lim / 10 || (v == lim / 10 && d > lim % 10)) {
            return 0;
        }
        v = v * 10 + d;
    }
    *out = neg ? -(apr_int64_t)(v - 1) - 1 : (apr_int64_t)v;
    *end = s;
    return *out >= min && *out <= max;
}

const char *llmgw_conf_int(apr_pool_t *p, const char *what, const char *arg,
                           apr_int64_t min, apr_int64_t max,
                           const char *example, apr_int64_t *out)
{
    const char *end;

    if (!digits(arg, &end, min, max, out) || *end) {
        return bad(p, what, arg,
                   apr_psprintf(p,
                                "a whole number from %" APR_INT64_T_FMT
                                " to %" APR_INT64_T_FMT,
                                min, max),
                   example);
    }
    return NULL;
}

const char *llmgw_conf_size(apr_pool_t *p, const char *what, const char *arg,
                            apr_off_t min, apr_off_t max, const char *example,
                            apr_off_t *out)
{
    static const char units[] = "KMG";
    const char *end, *u;
    apr_int64_t n;
    apr_off_t mul = 1;

    if (digits(arg, &end, 0, APR_INT64_MAX, &n)) {
        /* memchr, not strchr: a byte that is 0 once cased (a space) must
         * not find the terminator and read as a fourth unit. */
        if (*end && (u = memchr(units, *end & ~0x20, sizeof(units) - 1))
            && !end[1]) {
            mul = (apr_off_t)1 << (10 * (u - units + 1));
            end++;
        }
        if (!*end && max >= 0 && n <= max / mul && n * mul >= min) {
            *out = n * mul;
            return NULL;
        }
    }
    return bad(p, what, arg,
               apr_psprintf(p,
                            "a size from %" APR_OFF_T_FMT " to %" APR_OFF_T_FMT
                            " bytes (bytes, or a number with "
                            "K, M or G)",
                            min, max),
               example);
}

/* A whole number of units (1000000 / unit a second) as an interval. */
static const char *interval(apr_pool_t *p, const char *what, const char *arg,
                            apr_int64_t min, apr_int64_t max,
                            const char *example, apr_int64_t per_sec,
                            const char *units, apr_interval_time_t *out)
{
    apr_int64_t n, unit = APR_USEC_PER_SEC / per_sec;

    /* A count whose microseconds do not fit is not a time. */
    if (llmgw_conf_int(p, what, arg, min, max, example, &n)
        || n > APR_INT64_MAX / unit || n < APR_INT64_MIN / unit) {
        return bad(p, what, arg,
                   apr_psprintf(p,
                                "a number of %s from %" APR_INT64_T_FMT
                                " to %" APR_INT64_T_FMT,
                                units, min, max),
                   example);
    }
    *out = (apr_interval_time_t)n * unit;
    return NULL;
}

const char *llmgw_conf_seconds(apr_pool_t *p, const char *what,
                               const char *arg, apr_int64_t min,
                               apr_int64_t max, const char *example,
                               apr_interval_time_t *out)
{
    return interval(p, what, arg, min, max, example, 1, "seconds", out);
}

const char *llmgw_conf_msec(apr_pool_t *p, const char *what, const char *arg,
                            apr_int64_t min, apr_int64_t max,
                            const char *example, apr_interval_time_t *out)
{
    return interval(p, what, arg, min, max, example, 1000, "milliseconds",
                    out);
}

const char *llmgw_conf_keyword(apr_pool_t *p, const char *what,
                               const char *arg, const char *const *names,
                               int *out)
{
    int i;

    for (i = 0; names[i]; i++) {
        if (strcasecmp(arg, names[i]) == 0) {
            *out = i;
            return NULL;
        }
    }
    return apr_psprintf(p, "%s: unknown value '%s' (%s)", what, arg,
                        join(p, names, ""));
}

const char *llmgw_conf_flag(apr_pool_t *p, const char *what, const char *arg,
                            int *out)
{
    static const char *const names[] = { "off", "on", NULL };

    return llmgw_conf_keyword(p, what, arg, names, out);
}

const char *llmgw_conf_option(apr_pool_t *p, const char *what, const char *arg,
                              const char *const *names, int *which,
                              const char **value)
{
    const char *eq = strchr(arg, '=');
    apr_size_t n = eq ? (apr_size_t)(eq - arg) : 0;
    int i;

    for (i = 0; eq && names[i]; i++) {
        if (strlen(names[i]) == n && strncasecmp(arg, names[i], n) == 0) {
            *which = i;
            *value = eq + 1;
            return NULL;
        }
    }
    return apr_psprintf(p, "%s: unknown option '%s' (%s)", what, arg,
                        join(p, names, "="));
}
