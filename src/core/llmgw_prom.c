/* llmgw_prom: a line reader for Prometheus text that points into the text
 * and copies only a label value with escapes. Any line that is neither
 * blank, a comment nor a well-formed sample stops it: Prometheus itself
 * refuses such a scrape whole. */
#include <string.h>
#include <strings.h>

#include <apr_strings.h>

#include "llmgw_prom.h"

#define IS_BLANK(c) ((c) == ' ' || (c) == '\t')

static const char *skip_blanks(const char *s, const char *end)
{
    while (s < end && IS_BLANK(*s)) {
        s++;
    }
    return s;
}

static const char *skip_blanks_back(const char *s, const char *end)
{
    while (end > s && IS_BLANK(end[-1])) {
        end--;
    }
    return end;
}

static int name_start(char c, int colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
           || (colon && c == ':');
}

static int name_char(char c, int colon)
{
    return name_start(c, colon) || (c >= '0' && c <= '9');
}

/* A metric name (colons allowed) or a label name (none): its end. */
static const char *read_name(const char *s, const char *end, int colon)
{
    if (s >= end || !name_start(*s, colon)) {
        return NULL;
    }
    for (s++; s < end && name_char(*s, colon); s++) {
    }
    return s;
}

/* A quoted label value at s (past its quote). Escapes are \\, \" and \n
 * only. Its end past the closing quote, or NULL. */
static const char *read_label_value(apr_pool_t *p, const char *s,
                                    const char *end, const char **val,
                                    apr_size_t *len)
{
    const char *q;
    char *copy, *w;
    int escaped = 0;

    for (q = s; q < end && *q != '"' && *q != '\n'; q++) {
        if (*q == '\\') {
            if (q + 1 >= end || (q[1] != '\\' && q[1] != '"' && q[1] != 'n')) {
                return NULL;
            }
            escaped = 1;
            q++;
        }
    }
    if (q >= end || *q != '"') {
        return NULL;
    }
    if (!escaped) {
        *val = s;
        *len = (apr_size_t)(q - s);
        return q + 1;
    }
    copy = w = apr_palloc(p, (apr_size_t)(q - s) + 1);
    for (; s < q; s++) {
        if (*s == '\\') {
            s++;
            *w++ = *s == 'n' ? '\n' : *s;
        }
        else {
            *w++ = *s;
        }
    }
    *w = '\0';
    *val = copy;
    *len = (apr_size_t)(w - copy);
    return q + 1;
}

static const char *read_labels(apr_pool_t *p, const char *s, const char *end,
                               llmgw_prom_sample_t *out)
{
    s = skip_blanks(s, end);
    while (s < end && *s != '}') {
        const char *n = s, *ne = read_name(s, end, 0);
        int i = out->nlabels;

        if (!ne || i >= LLMGW_PROM_MAX_LABELS) {
            return NULL;
        }
        s = skip_blanks(ne, end);
        if (s >= end || *s != '=') {
            return NULL;
        }
        s = skip_blanks(s + 1, end);
        if (s >= end || *s != '"') {
            return NULL;
        }
        s = read_label_value(p, s + 1, end, &out->label_value[i],
                             &out->label_value_len[i]);
        if (!s) {
            return NULL;
        }
        out->label_name[i] = n;
        out->label_name_len[i] = (apr_size_t)(ne - n);
        out->nlabels++;
        s = skip_blanks(s, end);
        if (s < end && *s == ',') {
            s = skip_blanks(s + 1, end); /* a trailing comma is allowed */
        }
        else if (s < end && *s != '}') {
            return NULL;
        }
    }
    return s < end ? s + 1 : NULL;
}

static int word_is(const char *s, const char *e, const char *w)
{
    apr_size_t n = strlen(w);

    return (apr_size_t)(e - s) == n && strncasecmp(s, w, n) == 0;
}

/* A sample value as Go's ParseFloat takes it (what Prometheus reads):
 * a decimal with an optional exponent, or NaN, Inf, +Inf, -Inf. No
 * locale, no strtod: the text is untrusted and httpd's locale unknown. */
static int read_value(const char *s, const char *e, double *out)
{
    const char *q = s;
    double v = 0.0, scale = 1.0;
    int neg = 0, nd = 0, ex = 0, exneg = 0, exd = 0;

    if (q < e && (*q == '+' || *q == '-')) {
        neg = *q++ == '-';
    }
    if (word_is(q, e, "inf") || word_is(q, e, "infinity")) {
        *out = neg ? -__builtin_inf() : __builtin_inf();
        return 0;
    }
    if (q == s && word_is(q, e, "nan")) {
        *out = __builtin_nan("");
        return 0;
    }
    for (; q < e && *q >= '0' && *q <= '9'; q++, nd++) {
        v = v * 10.0 + (*q - '0');
    }
    if (q < e && *q == '.') {
        for (q++; q < e && *q >= '0' && *q <= '9'; q++, nd++) {
            scale /= 10.0;
            v += (*q - '0') * scale;
        }
    }
    if (!nd) {
        return -1;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '+' || *q == '-')) {
            exneg = *q++ == '-';
        }
        for (; q < e && *q >= '0' && *q <= '9'; q++, exd++) {
            /* Past 400 a double is 0 or infinite anyway. */
            ex = ex * 10 + (*q - '0');
            ex = ex > 400 ? 400 : ex;
        }
        if (!exd) {
            return -1;
        }
        for (; ex > 0 && v != 0.0; ex--) {
            v = exneg ? v / 10.0 : v * 10.0;
            if (v > 1.7976931348623157e308) {
                break; /* stays infinite */
            }
        }
    }
    if (q != e) {
        return -1;
    }
    *out = neg ? -v : v;
    return 0;
}

static int read_timestamp(const char *s, const char *e)
{
    if (s < e && (*s == '-' || *s == '+')) {
        s++;
    }
    if (s == e) {
        return -1;
    }
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') {
            return -1;
        }
    }
    return 0;
}

/* One sample line [line, end) (no newline in it). */
static int read_sample(apr_pool_t *p, const char *line, const char *end,
                       llmgw_prom_sample_t *out)
{
    const char *s = line, *ne, *v;

    ne = read_name(s, end, 1);
    if (!ne) {
        return -1;
    }
    out->name = s;
    out->name_len = (apr_size_t)(ne - s);
    out->nlabels = 0;
    s = skip_blanks(ne, end);
    if (s < end && *s == '{') {
        if (!(s = read_labels(p, s + 1, end, out))) {
            return -1;
        }
        s = skip_blanks(s, end);
    }
    else if (s == ne) {
        return -1; /* a name runs into something else */
    }
    for (v = s; s < end && !IS_BLANK(*s); s++) {
    }
    if (read_value(v, s, &out->value) != 0) {
        return -1;
    }
    s = skip_blanks(s, end);
    if (s < end) {
        for (v = s; s < end && !IS_BLANK(*s); s++) {
        }
        if (read_timestamp(v, s) != 0 || skip_blanks(s, end) != end) {
            return -1;
        }
    }
    return 0;
}

int llmgw_prom_next(apr_pool_t *p, const char **pos, const char *end,
                    llmgw_prom_sample_t *s)
{
    const char *line = *pos;

    while (line < end) {
        const char *nl = memchr(line, '\n', (apr_size_t)(end - line));
        const char *le = nl ? nl : end, *first;

        if (le > line && le[-1] == '\r') {
            le--;
        }
        first = skip_blanks(line, le);
        if (first == le || *first == '#') {
            line = nl ? nl + 1 : end;
            continue;
        }
        if (memchr(first, '\0', (apr_size_t)(le - first))
            || read_sample(p, first, skip_blanks_back(first, le), s) != 0) {
            *pos = line;
            return -1;
        }
        *pos = nl ? nl + 1 : end;
        return 1;
    }
    *pos = end;
    return 0;
}
