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

/* True when a chunk carries generated output rather than just a role:
 * non-empty content or text, a tool call, or reasoning. */
static int has_output(const char *d, apr_size_t len)
{
    return has_text(d, len, "\"content\"") || has_text(d, len, "\"text\"")
           || mem_find(d, len, "\"tool_calls\"") != NULL
           || mem_find(d, len, "\"reasoning") != NULL;
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
    apr_size_t dlen = 0, used;
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
            const char *v;

            s->id = (v = llmgw_json_gets(j, "id", NULL)) ? apr_pstrdup(s->p, v)
                                                         : "";
            s->object = (v = llmgw_json_gets(j, "object", NULL))
                            ? apr_pstrdup(s->p, v)
                            : NULL;
            s->model = (v = llmgw_json_gets(j, "model", NULL))
                           ? apr_pstrdup(s->p, v)
                           : NULL;
            s->created = llmgw_json_getl(j, 0, "created", NULL);
        }
        apr_pool_clear(s->lp);
    }
    if (has_output(d, dlen)) {
        s->content_events++;
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
    if (s->strip_usage) {
        /* The data line shrinks in place; the rest of the event follows. */
        apr_size_t gone = drop_null_usage(d, dlen);

        if (gone) {
            memmove(d + dlen - gone, d + dlen,
                    (apr_size_t)(ev + len - (d + dlen)));
            len -= gone;
        }
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

const char *llmgw_sse_error_events(apr_pool_t *p, const char *id,
                                   const char *object, apr_int64_t created,
                                   const char *model, int chat,
                                   const llmgw_error_t *err, apr_size_t *len)
{
    const char *tail = apr_psprintf(
        p,
        "data: {\"id\":%s,\"object\":%s,\"created\":%" APR_INT64_T_FMT
        ",\"model\":%s,\"choices\":[{\"index\":0,%s,"
        "\"finish_reason\":\"error\"}]}\n\n"
        "data: %s\n\n"
        "data: [DONE]\n\n",
        llmgw_json_quote(p, id ? id : ""),
        llmgw_json_quote(p, object ? object
                            : chat ? "chat.completion.chunk"
                                   : "text_completion"),
        created, llmgw_json_quote(p, model ? model : ""),
        chat ? "\"delta\":{}" : "\"text\":\"\"", llmgw_error_json(p, err));

    *len = strlen(tail);
    return tail;
}

const char *llmgw_sse_error_tail(const llmgw_sse_t *s, apr_pool_t *p,
                                 llmgw_endpoint_t ep, const llmgw_error_t *err,
                                 apr_size_t *len)
{
    int chat = s->object ? strcmp(s->object, "text_completion") != 0
                         : ep != LLMGW_EP_COMPLETIONS;

    return llmgw_sse_error_events(p, s->id, s->object, s->created, s->model,
                                  chat, err, len);
}
