/* llmgw_stream: SSE framing for the output filter. Events are forwarded
 * as soon as they are complete; only the rare usage chunk is parsed. */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_stream.h"

static apr_status_t sse_cleanup(void *data)
{
    llmgw_buf_free(&((llmgw_sse_t *)data)->buf);
    return APR_SUCCESS;
}

llmgw_sse_t *llmgw_sse_create(apr_pool_t *p, int strip_usage)
{
    llmgw_sse_t *s = apr_pcalloc(p, sizeof(*s));

    s->p = p;
    apr_pool_create(&s->lp, p);
    s->strip_usage = strip_usage;
    s->choices = 1;
    apr_pool_cleanup_register(p, s, sse_cleanup, apr_pool_cleanup_null);
    return s;
}

/* Offset just past the blank line that ends the event starting at or
 * before 'from', or 0 when the event is not complete yet. */
static apr_size_t event_end(const char *b, apr_size_t from, apr_size_t len)
{
    apr_size_t i;

    for (i = from; i + 1 < len; i++) {
        if (b[i] != '\n') {
            continue;
        }
        if (b[i + 1] == '\n') {
            return i + 2;
        }
        if (b[i + 1] == '\r' && i + 2 < len && b[i + 2] == '\n') {
            return i + 3;
        }
    }
    return 0;
}

/* The payload of the event's first "data:" line. */
static const char *event_data(const char *ev, apr_size_t len, apr_size_t *dlen)
{
    const char *s = ev, *end = ev + len, *eol;

    while (s < end) {
        eol = memchr(s, '\n', (apr_size_t)(end - s));
        if (!eol) {
            eol = end;
        }
        if ((apr_size_t)(eol - s) >= 5 && memcmp(s, "data:", 5) == 0) {
            s += 5;
            if (s < eol && *s == ' ') {
                s++;
            }
            *dlen = (apr_size_t)(eol - s);
            if (*dlen && s[*dlen - 1] == '\r') {
                (*dlen)--;
            }
            return s;
        }
        s = eol + 1;
    }
    return NULL;
}

static const char *mem_find(const char *hay, apr_size_t len,
                            const char *needle)
{
    apr_size_t n = strlen(needle);
    const char *s, *end = hay + len;

    for (s = hay; s + n <= end; s++) {
        s = memchr(s, *needle, (apr_size_t)(end - s));
        if (!s || s + n > end) {
            return NULL;
        }
        if (memcmp(s, needle, n) == 0) {
            return s;
        }
    }
    return NULL;
}

/* True when "key" has a non-empty string value somewhere in d. */
static int has_text(const char *d, apr_size_t len, const char *key)
{
    const char *end = d + len, *v = d;

    while ((v = mem_find(v, (apr_size_t)(end - v), key)) != NULL) {
        v = llmgw_json_skip_ws(v + strlen(key), end);
        if (v >= end || *v != ':') {
            continue;
        }
        v = llmgw_json_skip_ws(v + 1, end);
        if (v + 1 < end && v[0] == '"' && v[1] != '"') {
            return 1;
        }
    }
    return 0;
}

/* The bytes of every string value of "key" in d, as written (escapes
 * count as their text: a bound, not a count). */
static apr_int64_t text_of(const char *d, apr_size_t len, const char *key)
{
    const char *end = d + len, *v = d;
    apr_int64_t n = 0;

    while ((v = mem_find(v, (apr_size_t)(end - v), key)) != NULL) {
        const char *s;

        v = llmgw_json_skip_ws(v + strlen(key), end);
        if (v >= end || *v != ':') {
            continue;
        }
        v = llmgw_json_skip_ws(v + 1, end);
        if (v >= end || *v != '"') {
            continue;
        }
        for (s = ++v; s < end && *s != '"'; s++) {
            if (*s == '\\' && s + 1 < end) {
                s++;
            }
        }
        n += s - v;
        v = s;
    }
    return n;
}

/* What a chunk generated, in bytes: content (chat), text (completions),
 * reasoning and tool call arguments. */
static apr_int64_t generated_bytes(const char *d, apr_size_t len)
{
    return text_of(d, len, "\"content\"") + text_of(d, len, "\"text\"")
           + text_of(d, len, "\"reasoning_content\"")
           + text_of(d, len, "\"arguments\"");
}

/* True when a chunk carries generated output rather than just a role:
 * text (bytes, from generated_bytes), a tool call, or reasoning. */
static int has_output(const char *d, apr_size_t len, apr_int64_t bytes)
{
    return bytes > 0 || mem_find(d, len, "\"tool_calls\"") != NULL
           || mem_find(d, len, "\"reasoning") != NULL;
}

/* Notes the choices of an event with a finish_reason string (once per
 * choice in a stream: the parse is rare) that are not "error". */
static void note_finish(llmgw_sse_t *s, const char *d, apr_size_t dlen)
{
    apr_size_t used, i, n;
    llmgw_json_t *j = llmgw_json_parse_prefix(s->lp, d, dlen, &used);
    llmgw_json_t *choices = j ? llmgw_json_getj(j, "choices", NULL) : NULL;

    n = choices && llmgw_json_type(choices, NULL) == LLMGW_JSON_ARRAY
            ? llmgw_json_array_len(choices)
            : 0;
    for (i = 0; i < n; i++) {
        llmgw_json_t *ch = llmgw_json_array_get(choices, i);
        apr_int64_t idx = llmgw_json_getl(ch, (apr_int64_t)i, "index", NULL);
        const char *fr = llmgw_json_gets(ch, "finish_reason", NULL);

        if (fr && strcmp(fr, "error") != 0 && idx >= 0 && idx < 64) {
            s->finished |= APR_UINT64_C(1) << idx;
        }
    }
    apr_pool_clear(s->lp);
}

int llmgw_sse_finished(const llmgw_sse_t *s, int need_usage)
{
    int i;

    if (s->choices < 1 || s->choices > 64 || (need_usage && !s->usage.found)) {
        return 0;
    }
    for (i = 0; i < s->choices; i++) {
        if (!(s->finished & (APR_UINT64_C(1) << i))) {
            return 0;
        }
    }
    return 1;
}

/* Removes a ',"usage":null' member from d[0..len) (the one we made the
 * backend add to every chunk); returns how many bytes went. */
static apr_size_t drop_null_usage(char *d, apr_size_t len)
{
    char *end = d + len, *from;
    const char *v, *hit = mem_find(d, len, "\"usage\"");

    if (!hit) {
        return 0;
    }
    from = (char *)hit;
    v = from + 7;
    while (from > d && LLMGW_JSON_IS_WS(from[-1])) {
        from--;
    }
    if (from == d || from[-1] != ',') {
        return 0;
    }
    from--;
    v = llmgw_json_skip_ws(v, end);
    if (v >= end || *v++ != ':') {
        return 0;
    }
    v = llmgw_json_skip_ws(v, end);
    if (end - v < 4 || memcmp(v, "null", 4) != 0) {
        return 0;
    }
    v += 4;
    memmove(from, v, (apr_size_t)(end - v));
    return (apr_size_t)(v - from);
}

/* Looks at one complete event; returns its new length (0: drop it). */
static apr_size_t inspect(llmgw_sse_t *s, char *ev, apr_size_t len)
{
    apr_size_t dlen = 0, used, gone;
    apr_int64_t gen;
    char *d = (char *)event_data(ev, len, &dlen);
    llmgw_json_t *j;

    s->events++;
    if (!d) {
        return len;
    }
    if (dlen >= 6 && memcmp(d, "[DONE]", 6) == 0) {
        s->done = 1;
        return len;
    }
    if (!dlen || *d != '{') {
        s->malformed += dlen > 0;
        return len;
    }
    if (s->on_data) {
        s->on_data(s->baton, d, dlen);
    }
    if (!s->id) {
        j = llmgw_json_parse_prefix(s->lp, d, dlen, &used);
        s->malformed += j == NULL;
        if (j) {
            const char *v = llmgw_json_gets(j, "id", NULL);

            s->id = v ? apr_pstrdup(s->p, v) : "";
        }
        apr_pool_clear(s->lp);
    }
    gen = generated_bytes(d, dlen);
    if (has_output(d, dlen, gen)) {
        s->content_events++;
        s->text_bytes += gen;
    }
    if (has_text(d, dlen, "\"finish_reason\"")) {
        note_finish(s, d, dlen);
    }
    if (llmgw_usage_find(d, dlen, &s->usage) && s->strip_usage) {
        /* Only the usage-only chunk we injected is ours to remove. A
         * parse of its own pool: a backend may send usage in every chunk. */
        int usage_only = 0;

        j = llmgw_json_parse_prefix(s->lp, d, dlen, &used);
        if (j && llmgw_json_type(j, "choices", NULL) == LLMGW_JSON_ARRAY) {
            usage_only =
                llmgw_json_array_len(llmgw_json_getj(j, "choices", NULL)) == 0;
        }
        apr_pool_clear(s->lp);
        if (usage_only) {
            return 0;
        }
    }
    /* "usage":null (OpenAI's and vLLM's in every chunk but the last when
     * usage is asked for, and in all when we asked) is not valid in
     * OpenAI's own schema, whose usage is an object when present: it goes.
     * The data line shrinks in place; the rest of the event follows. */
    if ((gone = drop_null_usage(d, dlen)) != 0) {
        memmove(d + dlen - gone, d + dlen,
                (apr_size_t)(ev + len - (d + dlen)));
        len -= gone;
    }
    return len;
}

/* The stream cannot go on: the events handed out last stay valid until
 * the next call (the rest of the buffer goes now), then all of it goes. */
static void fail(llmgw_sse_t *s, apr_size_t keep)
{
    char *nb;

    s->failed = 1;
    s->buf.len = s->scanned = s->ready = keep;
    if (!keep) {
        llmgw_buf_free(&s->buf);
    }
    else if ((nb = realloc(s->buf.b, keep)) != NULL) {
        s->buf.b = nb;
        s->buf.cap = keep;
    }
}

apr_size_t llmgw_sse_feed(llmgw_sse_t *s, const char *in, apr_size_t len,
                          const char **out)
{
    apr_size_t start, end, from;

    *out = "";
    if (s->failed) {
        fail(s, 0);
        return 0;
    }
    if (s->ready) {
        memmove(s->buf.b, s->buf.b + s->ready, s->buf.len - s->ready);
        s->buf.len -= s->ready;
        s->scanned -= s->ready;
        s->ready = 0;
    }
    if (!llmgw_buf_add(&s->buf, in, len)) {
        fail(s, 0);
        return 0;
    }
    /* Events before 'start' are complete and kept. The search resumes
     * two bytes before where the last one stopped: a terminator may
     * straddle two reads. */
    start = 0;
    from = s->scanned > 2 ? s->scanned - 2 : 0;
    while ((end = event_end(s->buf.b, from > start ? from : start, s->buf.len))
           != 0) {
        apr_size_t keep = inspect(s, s->buf.b + start, end - start);

        if (keep < end - start) {
            memmove(s->buf.b + start + keep, s->buf.b + end, s->buf.len - end);
            s->buf.len -= end - start - keep;
        }
        start += keep;
        from = start;
    }
    s->scanned = s->buf.len;
    s->ready = start;
    if (s->buf.len - start > LLMGW_STREAM_MAX_EVENT) {
        fail(s, start);
    }
    *out = s->buf.b ? s->buf.b : "";
    return start;
}

apr_size_t llmgw_sse_pending(const llmgw_sse_t *s)
{
    return s->buf.len - s->ready;
}

const char *llmgw_sse_error_events(apr_pool_t *p, const llmgw_error_t *err,
                                   apr_size_t *len)
{
    const char *tail = apr_pstrcat(p, "data: ", llmgw_error_json(p, err),
                                   "\n\n"
                                   "data: [DONE]\n\n",
                                   NULL);

    *len = strlen(tail);
    return tail;
}
