/* test_manage.c: run-time changes to members and routes: each refusal with
 * its reason and nothing changed, the routes they make, the state file read
 * back exactly (and refused whole when damaged), the httpd.conf lines. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <apr_file_info.h>

#include <apr_file_io.h>
#include <apr_strings.h>

#include "llmgw_buf.h"
#include "llmgw_manage.h"
#include "test_core.h"

/* r, served by balancer://one in OpenAI's dialect. */
static llmgw_route_t *on_one(llmgw_route_t *r)
{
    r->balancer = "balancer://one";
    r->dialect = "openai";
    return r;
}

/* A route of the tests' httpd.conf, at test.conf:7. */
#define route(...) on_one(test_route(7, __VA_ARGS__))

/* Adds to b a balancer of httpd.conf: its name, growth slots and member
 * URLs (NULL-ended). */
static void balancer(llmgw_manage_base_t *b, const char *name, int growth, ...)
{
    llmgw_manage_balancer_t *bal =
        &APR_ARRAY_PUSH(b->balancers, llmgw_manage_balancer_t);
    const char *url;
    va_list ap;

    bal->name = name;
    bal->growth = growth;
    bal->members = apr_array_make(test_pool, 2, sizeof(const char *));
    va_start(ap, growth);
    while ((url = va_arg(ap, const char *)) != NULL) {
        APR_ARRAY_PUSH(bal->members, const char *) = url;
    }
    va_end(ap);
}

/* httpd.conf of the tests: balancer://one (two members, two growth
 * slots) and balancer://two (one member, none); routes "small" (alias
 * "tiny"), the glob "llama3*" and the exact "big". */
static llmgw_manage_base_t *base(void)
{
    llmgw_manage_base_t *b = apr_pcalloc(test_pool, sizeof(*b));
    llmgw_router_t *rt = llmgw_router_create(test_pool);

    ck_assert_ptr_null(
        llmgw_router_add(test_pool, rt, route("small", "tiny", NULL)));
    ck_assert_ptr_null(
        llmgw_router_add(test_pool, rt, route("llama3*", NULL)));
    ck_assert_ptr_null(llmgw_router_add(test_pool, rt, route("big", NULL)));
    b->router = rt;
    b->balancers =
        apr_array_make(test_pool, 2, sizeof(llmgw_manage_balancer_t));
    balancer(b, "balancer://one", 2, "http://127.0.0.1:9001",
             "http://127.0.0.1:9002/", NULL);
    balancer(b, "balancer://two", 0, "http://127.0.0.1:9101", NULL);
    return b;
}

static llmgw_change_t member(llmgw_change_kind_t k, const char *bal,
                             const char *url, int lbfactor)
{
    return (llmgw_change_t){
        .kind = k, .balancer = bal, .url = url, .lbfactor = lbfactor
    };
}

/* A change to a member of balancer://one. */
static llmgw_change_t one(llmgw_change_kind_t k, const char *url, int lbfactor)
{
    return member(k, "balancer://one", url, lbfactor);
}

static llmgw_change_t named(llmgw_change_kind_t k, const char *route,
                            const char *name)
{
    return (llmgw_change_t){ .kind = k, .route = route, .name = name };
}

/* Applies c, which must be refused with a message holding want, and
 * checks that m's text did not change. */
static void refused(llmgw_manage_base_t *b, llmgw_manage_t *m,
                    llmgw_change_t c, const char *want)
{
    const char *before = llmgw_manage_write(test_pool, m, NULL);
    const char *err = llmgw_manage_apply(test_pool, b, m, &c);

    ck_assert_msg(err != NULL, "%s accepted, wanted: %s",
                  llmgw_change_kind_name(c.kind), want);
    ck_assert_has(err, want, NULL);
    ck_assert_str_eq(llmgw_manage_write(test_pool, m, NULL), before);
}

static void applied(llmgw_manage_base_t *b, llmgw_manage_t *m,
                    llmgw_change_t c)
{
    const char *err = llmgw_manage_apply(test_pool, b, m, &c);

    ck_assert_msg(err == NULL, "%s refused: %s",
                  llmgw_change_kind_name(c.kind), err);
}

static const char *routed(llmgw_manage_base_t *b, llmgw_manage_t *m,
                          const char *model)
{
    llmgw_router_t *rt = llmgw_manage_router(test_pool, b, m);
    const llmgw_route_t *r = llmgw_router_find(rt, model);

    return r ? r->name : "(none)";
}

START_TEST(urls_checked_and_written_one_way)
{
    static const char *const bad[] = {
        "ftp://127.0.0.1:21",
        "127.0.0.1:9001",
        "http://",
        "http://:9001",
        "http://127.0.0.1:0",
        "http://127.0.0.1:65536",
        "http://127.0.0.1:",
        "http://u@127.0.0.1",
        "http://127.0.0.1/a?b=1",
        "http://127.0.0.1/a#f",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/\x01",
        "http://127.0.0.1/%zz",
        "http://[::1",
        "unix:/run/llm.sock|http://x",
        "",
    };
    const char *why, *n;
    char *longurl;
    apr_size_t i;

    n = llmgw_manage_url_norm(test_pool, "HTTP://LocalHost:9001/v1//", &why);
    ck_assert_str_eq(n, "http://localhost:9001/v1");
    n = llmgw_manage_url_norm(test_pool, "https://[::1]:8443", &why);
    ck_assert_str_eq(n, "https://[::1]:8443");
    n = llmgw_manage_url_norm(test_pool, "http://gpu-3.lan/a/%41", &why);
    ck_assert_str_eq(n, "http://gpu-3.lan/a/%41");
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(!llmgw_manage_url_norm(test_pool, bad[i], &why),
                      "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
    longurl = apr_pcalloc(test_pool, 300);
    memcpy(longurl, "http://h/", 9);
    memset(longurl + 9, 'a', 290);
    ck_assert_ptr_null(llmgw_manage_url_norm(test_pool, longurl, &why));
    ck_assert_has(why, "256", NULL);
}
END_TEST

START_TEST(members_added_weighted_removed)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = llmgw_manage_create(test_pool);
    llmgw_change_t c;
    const llmgw_manage_entry_t *e;

    c = one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9003/", 3);
    c.timeout = 30;
    c.probe = LLMGW_MANAGE_PROBE_OLLAMA;
    applied(b, m, c);
    ck_assert_int_eq(m->entries->nelts, 1);
    e = &APR_ARRAY_IDX(m->entries, 0, llmgw_manage_entry_t);
    ck_assert_str_eq(e->url, "http://127.0.0.1:9003");
    ck_assert_int_eq(e->lbfactor, 3);
    ck_assert_int_eq(e->timeout, 30);
    ck_assert_int_eq(e->probe, LLMGW_MANAGE_PROBE_OLLAMA);
    ck_assert(!e->configured);

    refused(b, m, c, "is a member of balancer://one already");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "HTTP://127.0.0.1:9002", 0),
            "already");
    refused(b, m,
            member(LLMGW_CHANGE_MEMBER_ADD, "balancer://nope",
                   "http://127.0.0.1:9", 0),
            "no balancer 'balancer://nope'");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "gopher://127.0.0.1:9", 0),
            "not an http:// or https:// URL");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9004", 101),
            "lbfactor must be");
    c = one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9004", 1);
    c.timeout = 86401;
    refused(b, m, c, "timeout must be");
    c.timeout = 0;
    c.probe = (llmgw_manage_probe_t)9;
    refused(b, m, c, "probe kind");
    refused(b, m,
            member(LLMGW_CHANGE_MEMBER_ADD, "balancer://two",
                   "http://127.0.0.1:9102", 1),
            "no free BalancerGrowth slot");

    /* a configured member's weight, then its removal: one entry */
    applied(b, m, one(LLMGW_CHANGE_MEMBER_WEIGHT, "http://127.0.0.1:9001", 5));
    refused(b, m, one(LLMGW_CHANGE_MEMBER_WEIGHT, "http://127.0.0.1:9001", 0),
            "lbfactor must be");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_WEIGHT, "http://127.0.0.1:9999", 5),
            "is not a member of balancer://one");
    applied(b, m, one(LLMGW_CHANGE_MEMBER_REMOVE, "http://127.0.0.1:9001", 0));
    ck_assert_int_eq(m->entries->nelts, 2);
    refused(b, m, one(LLMGW_CHANGE_MEMBER_REMOVE, "http://127.0.0.1:9001", 0),
            "was removed");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_WEIGHT, "http://127.0.0.1:9001", 2),
            "add it again first");
    /* back as configured: nothing left to say about it */
    applied(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9001", 0));
    ck_assert_int_eq(m->entries->nelts, 1);
}
END_TEST

START_TEST(growth_slots_held_by_removed_members)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = llmgw_manage_create(test_pool);

    applied(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9003", 0));
    applied(b, m, one(LLMGW_CHANGE_MEMBER_REMOVE, "http://127.0.0.1:9003", 0));
    applied(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9004", 0));
    /* two slots, both held: 9003's worker stays, disabled */
    refused(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9005", 0),
            "no free BalancerGrowth slot (2");
    /* 9003 taken back needs no new slot */
    applied(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9003", 4));
    ck_assert_int_eq(m->entries->nelts, 2);
}
END_TEST

START_TEST(names_added_and_removed)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = llmgw_manage_create(test_pool);

    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "small", "small-2"));
    ck_assert_str_eq(routed(b, m, "small-2"), "small");
    ck_assert_str_eq(routed(b, m, "tiny"), "small");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "small-2"),
            "is routed by route 'small' already");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "tiny"),
            "routed by route 'small'");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "llama3:8b"),
            "glob route 'llama3*'");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "nope", "x"),
            "no route 'nope'");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "a\x1b[31mred"),
            "control character");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "a\xc2\x85z"),
            "control character");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "a\xff"), "not UTF-8");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "q*"), "a glob");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "a\"b"), "a quote");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", " a"), "a space");
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", ""), "no model name");
    refused(b, m,
            named(LLMGW_CHANGE_NAME_ADD, "big",
                  apr_pstrcat(test_pool,
                              "0123456789012345678901234567890123456789",
                              "0123456789012345678901234567890123456789",
                              "0123456789012345678901234567890123456789",
                              "012345678", NULL)),
            "longer than 128 bytes");
    /* a glob route may take an exact name it matches: nothing moves */
    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "llama3*", "llama3:70b"));
    ck_assert_str_eq(routed(b, m, "llama3:70b"), "llama3*");

    /* removing a configured alias; a name added is just taken back */
    applied(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "small", "tiny"));
    ck_assert_str_eq(routed(b, m, "tiny"), "(none)");
    refused(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "small", "tiny"),
            "route 'small' has no model name 'tiny'");
    refused(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "big", "small"),
            "route 'big' has no model name 'small'");
    applied(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "small", "small-2"));
    ck_assert_str_eq(routed(b, m, "small-2"), "(none)");
    ck_assert_int_eq(m->entries->nelts, 2);
    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "small", "tiny"));
    ck_assert_str_eq(routed(b, m, "tiny"), "small");
    ck_assert_int_eq(m->entries->nelts, 1);
}
END_TEST

START_TEST(configured_name_put_back_under_a_glob)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = llmgw_manage_create(test_pool);
    llmgw_router_t *rt = llmgw_router_create(test_pool);

    /* "llama3:8b" exact, after the glob that also matches it */
    ck_assert_ptr_null(
        llmgw_router_add(test_pool, rt, route("llama3*", NULL)));
    ck_assert_ptr_null(
        llmgw_router_add(test_pool, rt, route("llama3:8b", NULL)));
    b->router = rt;
    applied(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "llama3:8b", "llama3:8b"));
    ck_assert_str_eq(routed(b, m, "llama3:8b"), "llama3*");
    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "llama3:8b", "llama3:8b"));
    ck_assert_str_eq(routed(b, m, "llama3:8b"), "llama3:8b");
    ck_assert_int_eq(m->entries->nelts, 0);
}
END_TEST

START_TEST(routes_added_and_removed)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = llmgw_manage_create(test_pool);
    llmgw_route_t tmpl;
    llmgw_router_t *rt;
    const llmgw_route_t *r;
    llmgw_change_t c = named(LLMGW_CHANGE_ROUTE_ADD, "qwen", NULL);

    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.cache_policy = 2;
    b->tmpl = &tmpl;
    refused(b, m, c, "no balancer ''");
    c.balancer = "balancer://two";
    c.dialect = "vllm";
    refused(b, m, c, "dialect");
    c.dialect = "ollama";
    c.balancer = "balancer://TWO"; /* as httpd.conf spells it, kept */
    applied(b, m, c);
    c.balancer = "balancer://two";
    refused(b, m, c, "there is a route 'qwen' already");
    c.route = "big";
    refused(b, m, c, "there is a route 'big' already");
    c.route = "tiny";
    refused(b, m, c, "routed by route 'small'");
    c.route = "llama3-x";
    refused(b, m, c, "would shadow");
    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "qwen", "qwen2.5"));

    rt = llmgw_manage_router(test_pool, b, m);
    r = llmgw_router_find(rt, "qwen2.5");
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->name, "qwen");
    ck_assert_str_eq(r->balancer, "balancer://two");
    ck_assert_str_eq(r->dialect, "ollama");
    ck_assert_str_eq(r->upstream_model, "qwen");
    ck_assert_int_eq(r->cache_policy, 2);
    ck_assert_str_eq(llmgw_router_names(test_pool, rt),
                     "small, tiny, big, qwen, qwen2.5");
    /* the configured router is untouched */
    ck_assert_ptr_null(llmgw_router_find(b->router, "qwen"));

    refused(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "qwen", "qwen"),
            "names the route");
    refused(b, m, named(LLMGW_CHANGE_ROUTE_REMOVE, "big", NULL),
            "is in httpd.conf (test.conf:7)");
    refused(b, m, named(LLMGW_CHANGE_ROUTE_REMOVE, "nope", NULL),
            "no route 'nope' added");
    applied(b, m, named(LLMGW_CHANGE_ROUTE_REMOVE, "qwen", NULL));
    ck_assert_int_eq(m->entries->nelts, 0);
    ck_assert_str_eq(routed(b, m, "qwen2.5"), "(none)");
}
END_TEST

START_TEST(entries_bounded)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = llmgw_manage_create(test_pool);
    int i;

    for (i = 0; i < LLMGW_MANAGE_ENTRIES_MAX; i++) {
        applied(b, m,
                named(LLMGW_CHANGE_NAME_ADD, "big",
                      apr_psprintf(test_pool, "n%d", i)));
    }
    refused(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "one-more"),
            "the most kept");
    refused(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "small", "tiny"),
            "the most kept");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9003", 0),
            "the most kept");
    refused(b, m, one(LLMGW_CHANGE_MEMBER_WEIGHT, "http://127.0.0.1:9001", 2),
            "the most kept");
}
END_TEST

/* A state with one change of each kind. */
static llmgw_manage_t *full_state(llmgw_manage_base_t *b)
{
    llmgw_manage_t *m = llmgw_manage_create(test_pool);
    llmgw_change_t c;

    c = one(LLMGW_CHANGE_MEMBER_ADD, "http://127.0.0.1:9003", 3);
    c.timeout = 30;
    c.probe = LLMGW_MANAGE_PROBE_LLAMACPP;
    applied(b, m, c);
    applied(b, m, one(LLMGW_CHANGE_MEMBER_WEIGHT, "http://127.0.0.1:9002", 7));
    applied(b, m,
            member(LLMGW_CHANGE_MEMBER_REMOVE, "balancer://two",
                   "http://127.0.0.1:9101", 0));
    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "big", "large"));
    applied(b, m, named(LLMGW_CHANGE_NAME_REMOVE, "small", "tiny"));
    c = named(LLMGW_CHANGE_ROUTE_ADD, "qwen", NULL);
    c.balancer = "balancer://one";
    applied(b, m, c);
    applied(b, m, named(LLMGW_CHANGE_NAME_ADD, "qwen", "qwen2.5"));
    return m;
}

START_TEST(state_written_and_read_back)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = full_state(b), *back;
    apr_array_header_t *dropped =
        apr_array_make(test_pool, 1, sizeof(const char *));
    const char *text, *err;
    apr_size_t len;

    text = llmgw_manage_write(test_pool, m, &len);
    ck_assert_str_eq(
        text,
        "{\"llmgw_manage\":1}\n"
        "{\"op\":\"member_add\",\"balancer\":\"balancer://one\","
        "\"url\":\"http://127.0.0.1:9003\",\"lbfactor\":3,\"timeout\":30,"
        "\"probe\":\"llamacpp\"}\n"
        "{\"op\":\"member_weight\",\"balancer\":\"balancer://one\","
        "\"url\":\"http://127.0.0.1:9002\",\"lbfactor\":7}\n"
        "{\"op\":\"member_remove\",\"balancer\":\"balancer://two\","
        "\"url\":\"http://127.0.0.1:9101\"}\n"
        "{\"op\":\"name_add\",\"route\":\"big\",\"name\":\"large\"}\n"
        "{\"op\":\"name_remove\",\"route\":\"small\",\"name\":\"tiny\"}\n"
        "{\"op\":\"route_add\",\"route\":\"qwen\","
        "\"balancer\":\"balancer://one\",\"dialect\":\"openai\"}\n"
        "{\"op\":\"name_add\",\"route\":\"qwen\",\"name\":\"qwen2.5\"}\n");
    back = llmgw_manage_read(test_pool, b, text, len, dropped, &err);
    ck_assert_msg(back != NULL, "%s", err);
    ck_assert_int_eq(dropped->nelts, 0);
    ck_assert_str_eq(llmgw_manage_write(test_pool, back, NULL), text);
    ck_assert_str_eq(routed(b, back, "qwen2.5"), "qwen");
    ck_assert_str_eq(routed(b, back, "tiny"), "(none)");

    /* httpd.conf lost balancer://two: that change is left out, said why */
    apr_array_pop(b->balancers);
    back = llmgw_manage_read(test_pool, b, text, len, dropped, &err);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(dropped->nelts, 1);
    ck_assert_has(APR_ARRAY_IDX(dropped, 0, const char *), "line 4",
                  "member_remove", "no balancer 'balancer://two'", NULL);
    ck_assert_int_eq(back->entries->nelts, m->entries->nelts - 1);
}
END_TEST

START_TEST(damaged_state_refused_whole)
{
    static const char *const bad[] = {
        "",
        "{\"llmgw_manage\":2}\n",
        "{\"llmgw_manage\": 1}\n",
        "{\"llmgw_manage\":1}\n\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"name_add\",\"route\":\"big\"",
        ("{\"llmgw_manage\":1}\n{\"op\":\"name_add\",\"route\":\"big\","
         "\"name\":\"x\",\"extra\":1}\n"),
        "{\"llmgw_manage\":1}\n{\"op\":\"name_add\",\"route\":7}\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"rename\"}\n",
        "{\"llmgw_manage\":1}\n[]\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"member_add\",\"lbfactor\":1.5}\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"member_add\",\"lbfactor\":-1}\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"member_add\",\"probe\":\"ping\"}\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"name_add\",\"op\":\"name_add\"}\n",
        "{\"llmgw_manage\":1}\n{\"op\":\"name_add\",\"name\":\"a\\u0000\"}\n",
    };
    llmgw_manage_base_t *b = base();
    const char *err, *longline;
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        ck_assert_msg(!llmgw_manage_read(test_pool, b, bad[i], strlen(bad[i]),
                                         NULL, &err),
                      "read: %s", bad[i]);
        ck_assert_ptr_nonnull(err);
    }
    longline = apr_pstrcat(
        test_pool, "{\"llmgw_manage\":1}\n{\"op\":\"name_add\",\"name\":\"",
        apr_psprintf(test_pool, "%01100d", 0), "\"}\n", NULL);
    ck_assert_ptr_null(llmgw_manage_read(test_pool, b, longline,
                                         strlen(longline), NULL, &err));
    ck_assert_has(err, "line 2 is longer", NULL);
    /* a last line without its newline still reads */
    err = "{\"llmgw_manage\":1}\n"
          "{\"op\":\"name_add\",\"route\":\"big\",\"name\":\"x\"}";
    ck_assert_ptr_nonnull(
        llmgw_manage_read(test_pool, b, err, strlen(err), NULL, &err));
}
END_TEST

START_TEST(state_file_saved_atomically)
{
    llmgw_manage_base_t *b = base();
    llmgw_manage_t *m = full_state(b), *back;
    const char *tmp, *dir, *path, *err;
    apr_finfo_t fi;
    FILE *f;

    ck_assert_int_eq(apr_temp_dir_get(&tmp, test_pool), APR_SUCCESS);
    dir = apr_psprintf(test_pool, "%s/test_manage.%ld", tmp, (long)getpid());
    ck_assert_int_eq(apr_dir_make(dir, APR_FPROT_OS_DEFAULT, test_pool),
                     APR_SUCCESS);
    path = apr_pstrcat(test_pool, dir, "/state", NULL);
    back = llmgw_manage_load(test_pool, path, b, NULL, &err);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(back->entries->nelts, 0);

    ck_assert_ptr_null(llmgw_manage_save(test_pool, path, m));
    ck_assert_int_ne(apr_stat(&fi, apr_pstrcat(test_pool, path, ".tmp", NULL),
                              APR_FINFO_TYPE, test_pool),
                     APR_SUCCESS);
    back = llmgw_manage_load(test_pool, path, b, NULL, &err);
    ck_assert_msg(back != NULL, "%s", err);
    ck_assert_str_eq(llmgw_manage_write(test_pool, back, NULL),
                     llmgw_manage_write(test_pool, m, NULL));

    f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("{\"op\":\"name_add\",\"route\":\"big\",\"name\":", f);
    fclose(f);
    ck_assert_ptr_null(llmgw_manage_load(test_pool, path, b, NULL, &err));
    ck_assert_has(err, "line 9", NULL);

    /* a save that fails leaves the file as it was: written beside it,
     * then renamed over it (here the file beside cannot be made) */
    ck_assert_int_eq(apr_dir_make(apr_pstrcat(test_pool, path, ".tmp", NULL),
                                  APR_FPROT_OS_DEFAULT, test_pool),
                     APR_SUCCESS);
    ck_assert_ptr_nonnull(
        llmgw_manage_save(test_pool, path, llmgw_manage_create(test_pool)));
    ck_assert_ptr_null(llmgw_manage_load(test_pool, path, b, NULL, &err));
    ck_assert_has(err, "line 9", NULL);
    apr_dir_remove(apr_pstrcat(test_pool, path, ".tmp", NULL), test_pool);
    ck_assert_ptr_nonnull(
        llmgw_manage_save(test_pool, "/nonexistent-dir/state", m));
    apr_file_remove(path, test_pool);
    apr_dir_remove(dir, test_pool);
}
END_TEST

/* llmgw_file_replace keeps the old file as prev when asked, and leaves
 * no .tmp; llmgw_file_read takes a file whole, NUL-terminated, and
 * refuses one over its bound (a state file too: its own message). */
START_TEST(files_replaced_whole_and_read_bounded)
{
    const char *tmp, *dir, *path, *prev, *err;
    char *text;
    apr_size_t len;
    apr_finfo_t fi;

    ck_assert_int_eq(apr_temp_dir_get(&tmp, test_pool), APR_SUCCESS);
    dir = apr_psprintf(test_pool, "%s/test_file.%ld", tmp, (long)getpid());
    ck_assert_int_eq(apr_dir_make(dir, APR_FPROT_OS_DEFAULT, test_pool),
                     APR_SUCCESS);
    path = apr_pstrcat(test_pool, dir, "/snap", NULL);
    prev = apr_pstrcat(test_pool, dir, "/snap.1", NULL);
    ck_assert_int_eq(llmgw_file_replace(test_pool, path, "one", 3, 0, prev),
                     APR_SUCCESS);
    ck_assert_int_eq(llmgw_file_replace(test_pool, path, "two!", 4, 1, prev),
                     APR_SUCCESS);
    ck_assert_int_eq(llmgw_file_read(test_pool, path, 4, &text, &len),
                     APR_SUCCESS);
    ck_assert_uint_eq(len, 4);
    ck_assert_str_eq(text, "two!");
    ck_assert_int_eq(llmgw_file_read(test_pool, prev, 4, &text, &len),
                     APR_SUCCESS);
    ck_assert_str_eq(text, "one");
    ck_assert_int_ne(apr_stat(&fi, apr_pstrcat(test_pool, path, ".tmp", NULL),
                              APR_FINFO_TYPE, test_pool),
                     APR_SUCCESS);
    ck_assert_int_eq(llmgw_file_read(test_pool, path, 3, &text, &len),
                     APR_ENOSPC);

    text = apr_pcalloc(test_pool, LLMGW_MANAGE_FILE_MAX + 1);
    memset(text, '\n', LLMGW_MANAGE_FILE_MAX + 1);
    ck_assert_int_eq(llmgw_file_replace(test_pool, path, text,
                                        LLMGW_MANAGE_FILE_MAX + 1, 0, NULL),
                     APR_SUCCESS);
    ck_assert_ptr_null(llmgw_manage_load(test_pool, path, base(), NULL, &err));
    ck_assert_has(err, "is larger than its bound", NULL);
    apr_file_remove(path, test_pool);
    apr_file_remove(prev, test_pool);
    apr_dir_remove(dir, test_pool);
}
END_TEST

START_TEST(conf_lines_to_paste)
{
    llmgw_manage_base_t *b = base();
    const char *s = llmgw_manage_conf_lines(test_pool, full_state(b));

    ck_assert_has(
        s,
        "# in <Proxy \"balancer://one\">:\n"
        "BalancerMember \"http://127.0.0.1:9003\" lbfactor=3 timeout=30\n"
        "# probe=llamacpp: LLMHealthCheck on probe=llamacpp",
        "# in <Proxy \"balancer://one\">, the member's line with:\n"
        "BalancerMember \"http://127.0.0.1:9002\" lbfactor=7\n",
        "# in <Proxy \"balancer://two\">, delete:\n"
        "#   BalancerMember \"http://127.0.0.1:9101\"\n",
        "# in <LLMRoute \"big\" ...>: add the argument \"large\"\n",
        "# in <LLMRoute \"small\" ...>: delete the argument \"tiny\"\n",
        "<LLMRoute \"qwen\" \"qwen2.5\">\n"
        "    LLMBackend balancer://one dialect=openai\n</LLMRoute>\n",
        NULL);
    ck_assert_lacks(s, "add the argument \"qwen2.5\"", NULL);
}
END_TEST

static const char *from_form(const char *body, llmgw_change_t *c)
{
    llmgw_form_t f;
    const char *err = llmgw_form_parse(test_pool, body, strlen(body),
                                       llmgw_action_fields, &f);

    ck_assert_msg(err == NULL, "%s: %s", body, err);
    return llmgw_manage_from_form(test_pool, &f, c);
}

START_TEST(changes_from_console_forms)
{
    llmgw_change_t c;

    ck_assert_ptr_null(from_form("do=member_add&b=balancer%3A%2F%2Fone&w=http"
                                 "%3A%2F%2F127.0.0.1%3A9003&lbfactor=12&"
                                 "timeout=30&probe=vllm",
                                 &c));
    ck_assert_int_eq(c.kind, LLMGW_CHANGE_MEMBER_ADD);
    ck_assert_str_eq(c.balancer, "balancer://one");
    ck_assert_str_eq(c.url, "http://127.0.0.1:9003");
    ck_assert_int_eq(c.lbfactor, 12);
    ck_assert_int_eq(c.timeout, 30);
    ck_assert_int_eq(c.probe, LLMGW_MANAGE_PROBE_VLLM);
    ck_assert_ptr_null(from_form("do=route_add&route=q&b=x&dialect=", &c));
    ck_assert_int_eq(c.kind, LLMGW_CHANGE_ROUTE_ADD);
    ck_assert_ptr_null(c.dialect);
    ck_assert_int_eq(c.lbfactor, 0);
    ck_assert_ptr_null(from_form("do=name_remove&route=big&name=a+b", &c));
    ck_assert_str_eq(c.name, "a b");
    ck_assert_has(from_form("do=member_weight&lbfactor=1x", &c),
                  "lbfactor is not a whole number", NULL);
    ck_assert_has(from_form("do=member_weight&lbfactor=-1", &c), "lbfactor",
                  NULL);
    ck_assert_has(from_form("do=member_add&timeout=1234567", &c), "timeout",
                  NULL);
    ck_assert_has(from_form("do=member_add&probe=ping", &c), "probe kind",
                  NULL);
    ck_assert_ptr_null(from_form("do=drain&b=x&w=y", &c));
    ck_assert_int_eq(c.kind, LLMGW_CHANGE_NONE);
}
END_TEST

Suite *manage_suite(void)
{
    return test_suite(
        "manage", "core", 0,
        TESTS(urls_checked_and_written_one_way, members_added_weighted_removed,
              growth_slots_held_by_removed_members, names_added_and_removed,
              configured_name_put_back_under_a_glob, routes_added_and_removed,
              entries_bounded, state_written_and_read_back,
              damaged_state_refused_whole, state_file_saved_atomically,
              files_replaced_whole_and_read_bounded, conf_lines_to_paste,
              changes_from_console_forms));
}
