/* fuzz_manage: the run-time changes' state file (bytes on disk a crash or
 * a hand may have damaged) read back against a fixed httpd.conf, and
 * member URLs: a file is taken whole or refused with a reason; what is
 * taken writes back to a text that reads as itself, holds only changes
 * that pass the checks (URLs written one way, names bounded and without
 * control characters, within the entries' bound) and routes every listed
 * name to a route on a configured balancer. The console's changes (form
 * bodies) go through the same checks: one refused leaves the state as it
 * was, and the state they make holds the same.
 * Input: a first byte 'U': the rest is a member's URL; 'F': the rest is
 * console forms, one a line, applied in turn; else the file. */
#include <apr_strings.h>

#include "fuzz.h"

#include "llmgw_form.h"
#include "llmgw_manage.h"

static llmgw_route_t *route(apr_pool_t *p, const char *a, const char *b)
{
    llmgw_route_t *r = apr_pcalloc(p, sizeof(*r));

    r->patterns = apr_array_make(p, 2, sizeof(const char *));
    APR_ARRAY_PUSH(r->patterns, const char *) = a;
    if (b) {
        APR_ARRAY_PUSH(r->patterns, const char *) = b;
    }
    r->name = a;
    r->balancer = "balancer://one";
    r->dialect = "openai";
    r->file = "fuzz.conf";
    return r;
}

/* balancer://one (two members, growth 3), balancer://two (one, none);
 * routes "small" with "tiny", "llama3*", "big". */
static llmgw_manage_base_t *base(apr_pool_t *p)
{
    llmgw_manage_base_t *b = apr_pcalloc(p, sizeof(*b));
    llmgw_router_t *rt = llmgw_router_create(p);
    llmgw_manage_balancer_t *bal;

    llmgw_router_add(p, rt, route(p, "small", "tiny"));
    llmgw_router_add(p, rt, route(p, "llama3*", NULL));
    llmgw_router_add(p, rt, route(p, "big", NULL));
    b->router = rt;
    b->balancers = apr_array_make(p, 2, sizeof(*bal));
    bal = &APR_ARRAY_PUSH(b->balancers, llmgw_manage_balancer_t);
    bal->name = "balancer://one";
    bal->members = apr_array_make(p, 2, sizeof(const char *));
    APR_ARRAY_PUSH(bal->members, const char *) = "http://127.0.0.1:9001";
    APR_ARRAY_PUSH(bal->members, const char *) = "http://127.0.0.1:9002";
    bal->growth = 3;
    bal = &APR_ARRAY_PUSH(b->balancers, llmgw_manage_balancer_t);
    bal->name = "balancer://two";
    bal->members = apr_array_make(p, 1, sizeof(const char *));
    APR_ARRAY_PUSH(bal->members, const char *) = "http://127.0.0.1:9101";
    return b;
}

static void check_url(apr_pool_t *p, const char *url)
{
    const char *why, *n = llmgw_manage_url_norm(p, url, &why), *again;
    apr_size_t i;

    FUZZ_CHECK(!n == !!why, "a URL both taken and refused, or neither");
    if (!n) {
        FUZZ_CHECK(*why, "an empty reason");
        return;
    }
    FUZZ_CHECK(strlen(n) <= strlen(url) && strlen(n) <= LLMGW_MANAGE_URL_MAX,
               "a URL grew: %s", n);
    FUZZ_CHECK(!strncmp(n, "http://", 7) || !strncmp(n, "https://", 8),
               "not http(s): %s", n);
    for (i = 0; n[i]; i++) {
        FUZZ_CHECK((unsigned char)n[i] > 0x20 && (unsigned char)n[i] < 0x7f
                       && !strchr("\"\\?#<>", n[i]),
                   "byte %02x in %s", (unsigned char)n[i], n);
    }
    again = llmgw_manage_url_norm(p, n, &why);
    FUZZ_CHECK(again && !strcmp(again, n), "not written one way: %s", n);
}

static void check_name(const char *s)
{
    apr_size_t i, n = s ? strlen(s) : 0;

    FUZZ_CHECK(n > 0 && n <= LLMGW_MANAGE_NAME_MAX, "a name of %zu bytes", n);
    for (i = 0; i < n; i++) {
        FUZZ_CHECK((unsigned char)s[i] >= 0x20 && s[i] != 0x7f,
                   "a control character in %s", s);
    }
}

static void check_state(apr_pool_t *p, const llmgw_manage_base_t *b,
                        const llmgw_manage_t *m)
{
    llmgw_router_t *rt = llmgw_manage_router(p, b, m);
    const char *why;
    int i;

    FUZZ_CHECK(m->entries->nelts <= LLMGW_MANAGE_ENTRIES_MAX, "%d entries",
               m->entries->nelts);
    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e =
            &APR_ARRAY_IDX(m->entries, i, llmgw_manage_entry_t);

        if (e->kind == LLMGW_ENTRY_MEMBER) {
            const char *n = llmgw_manage_url_norm(p, e->url, &why);

            FUZZ_CHECK(n && !strcmp(n, e->url), "a member %s", e->url);
            FUZZ_CHECK(e->lbfactor >= 0
                           && e->lbfactor <= LLMGW_MANAGE_LBFACTOR_MAX,
                       "lbfactor %d", e->lbfactor);
        }
        else {
            check_name(e->route);
            if (e->kind == LLMGW_ENTRY_NAME) {
                check_name(e->name);
            }
        }
    }
    for (i = 0; i < rt->listed->nelts; i++) {
        const char *n = APR_ARRAY_IDX(rt->listed, i, const char *);
        const llmgw_route_t *r = llmgw_router_find(rt, n);

        FUZZ_CHECK(r && r->balancer
                       && (!strcmp(r->balancer, "balancer://one")
                           || !strcmp(r->balancer, "balancer://two")),
                   "%s routed nowhere", n);
    }
    FUZZ_CHECK(llmgw_manage_conf_lines(p, m) != NULL, "no lines");
}

/* The console's forms, one a line, each applied to the state from none:
 * a form that does not read, or a change refused, changes nothing. */
static llmgw_manage_t *apply_forms(apr_pool_t *p, const llmgw_manage_base_t *b,
                                   const char *in, size_t size)
{
    llmgw_manage_t *m = llmgw_manage_create(p);
    const char *end = in + size, *nl, *before, *why;
    llmgw_change_t c;
    llmgw_form_t f;

    for (; in < end; in = nl + 1) {
        nl = memchr(in, '\n', (size_t)(end - in));
        nl = nl ? nl : end;
        why = llmgw_form_parse(p, in, (apr_size_t)(nl - in),
                               llmgw_action_fields, &f);
        if (why || (why = llmgw_manage_from_form(p, &f, &c)) != NULL
            || c.kind == LLMGW_CHANGE_NONE) {
            FUZZ_CHECK(!why || *why, "an empty reason");
            continue;
        }
        before = llmgw_manage_write(p, m, NULL);
        why = llmgw_manage_apply(p, b, m, &c);
        FUZZ_CHECK(!why || *why, "an empty reason");
        FUZZ_CHECK(!why || !strcmp(before, llmgw_manage_write(p, m, NULL)),
                   "a refused change (%s) changed the state", why);
    }
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    llmgw_manage_base_t *b = base(p);
    apr_array_header_t *dropped = apr_array_make(p, 4, sizeof(char *));
    llmgw_manage_t *m, *again;
    const char *err = NULL, *text, *text2;
    apr_size_t len;
    /* A copy of exactly size bytes: ASan sees a read past the text. */
    char *in = malloc(size + 1);

    memcpy(in, data, size);
    in[size] = '\0';
    if (size && in[0] == 'U') {
        if (!memchr(in, '\0', size)) {
            check_url(p, in + 1);
        }
        goto done;
    }
    if (size && in[0] == 'F') {
        m = apply_forms(p, b, in + 1, size - 1);
    }
    else {
        m = llmgw_manage_read(p, b, in, size, dropped, &err);
        FUZZ_CHECK(!m == !!err, "a file both taken and refused, or neither");
        if (!m) {
            FUZZ_CHECK(*err, "an empty reason");
            goto done;
        }
    }
    check_state(p, b, m);
    text = llmgw_manage_write(p, m, &len);
    dropped->nelts = 0;
    again = llmgw_manage_read(p, b, text, len, dropped, &err);
    FUZZ_CHECK(again, "its own text refused: %s", err);
    FUZZ_CHECK(dropped->nelts == 0, "its own text lost a change: %s",
               APR_ARRAY_IDX(dropped, 0, const char *));
    text2 = llmgw_manage_write(p, again, NULL);
    FUZZ_CHECK(!strcmp(text, text2), "read back differently:\n%s\n%s", text,
               text2);
done:
    free(in);
    apr_pool_destroy(p);
    return 0;
}
