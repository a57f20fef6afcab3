/* test_render.c: the console's HTML pages and XML from a status model:
 * every value escaped by construction (read back with libxml2's own
 * parsers, a <script> name is text), text that is not UTF-8 replaced,
 * forms only with a nonce, and the values formatted as the script does. */
#include <stdarg.h>
#include <string.h>

#include <apr_strings.h>
#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "llmgw_buf.h"
#include "llmgw_render.h"
#include "test_core.h"

#define EVIL "<script>alert(1)</script>"

static json_object *model(void)
{
    const char *text =
        "{\"version\":\"0.1\",\"time\":1767225600,\"server\":\"gw&co\","
        "\"total\":{\"requests\":1234567,\"errors\":2,\"hit_rate\":0.5},"
        "\"last_minute\":{\"requests_per_s\":1.5,\"duration_p50\":0.0123,"
        "\"ttft_p50\":null},"
        "\"chart\":{\"requests\":[0,1,2,1],\"tokens\":[0,0,0,0]},"
        "\"models\":[{\"route\":\"gpt-*\",\"model\":\"gpt-" EVIL "\","
        "\"requests\":3,\"statuses\":{\"200\":3},\"cache\":{\"hit\":1}}],"
        "\"balancers\":[{\"name\":\"balancer://"
        "be\",\"lbmethod\":\"byrequests\","
        "\"members\":[{\"name\":\"http://127.0.0.1:1\",\"status\":\"Init Ok "
        "\","
        "\"usable\":true,\"drained\":false,\"disabled\":false,"
        "\"lbfactor\":150,\"traffic\":null,\"health\":null}]}],"
        "\"routes\":[{\"name\":\"gpt-*\",\"patterns\":[\"gpt-*\",\"a&b\"],"
        "\"backend\":\"balancer://be\",\"dialect\":\"openai\","
        "\"upstream_model\":null,\"cache_policy\":\"all\",\"fallbacks\":[]}],"
        "\"cache\":{\"store\":\"shm\"},"
        "\"keys\":[{\"subject\":\"key:" EVIL "\",\"kind\":\"key\","
        "\"name\":\"" EVIL "\",\"budgets\":["
        "{\"unit\":\"tokens\",\"period\":\"day\",\"limit\":1000,\"used\":120,"
        "\"reserved\":5,\"resets\":1767312000}],\"rpm\":{\"limit\":10,"
        "\"remaining\":9},\"tpm\":null,\"requests\":1,\"ratelimited\":2}]}";
    json_object *m = json_tokener_parse(text);

    ck_assert_ptr_nonnull(m);
    return m;
}

static const char *page(json_object *m, llmgw_page_t pg, const char *nonce)
{
    llmgw_render_opts_t o = { "/llm-admin/", nonce, NULL };
    apr_size_t len = 0;
    char *html = llmgw_render_html(test_pool, m, pg, &o, &len);

    ck_assert_ptr_nonnull(html);
    ck_assert_uint_eq(strlen(html), len);
    return html;
}

/* The text of every element in doc, joined by '|'. */
static void texts(xmlNodePtr n, llmgw_pbuf_t *b)
{
    for (; n; n = n->next) {
        if (n->type == XML_TEXT_NODE) {
            llmgw_pbuf_add(test_pool, b, (const char *)n->content,
                           strlen((const char *)n->content));
            llmgw_pbuf_add(test_pool, b, "|", 1);
        }
        if (n->type == XML_ELEMENT_NODE
            && strcmp((const char *)n->name, "script") == 0) {
            /* The page has one script element: the console's own, empty. */
            ck_assert_ptr_null(n->children);
        }
        texts(n->children, b);
    }
}

static const char *parsed_text(const char *html)
{
    htmlDocPtr doc = htmlReadMemory(html, (int)strlen(html), NULL, "UTF-8",
                                    HTML_PARSE_NOERROR | HTML_PARSE_NONET);
    llmgw_pbuf_t b = { 0 };

    ck_assert_ptr_nonnull(doc);
    llmgw_pbuf_add(test_pool, &b, "", 0);
    texts(xmlDocGetRootElement(doc), &b);
    xmlFreeDoc(doc);
    b.b[b.len] = '\0';
    return b.b;
}

#define X_(s) ((const xmlChar *)(s))

/* n's attribute name, "" when it has none (from test_pool). */
static const char *prop(xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetProp(n, X_(name));
    const char *out = apr_pstrdup(test_pool, v ? (const char *)v : "");

    xmlFree(v);
    return out;
}

static void pbuf_printf(llmgw_pbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = apr_pvsprintf(test_pool, fmt, ap);
    va_end(ap);
    llmgw_pbuf_add(test_pool, b, s, strlen(s));
}

/* The node after n in document order, n's children left out. */
static xmlNodePtr next_of(xmlNodePtr n)
{
    while (n && !n->next) {
        n = n->parent;
    }
    return n ? n->next : NULL;
}

START_TEST(names_are_text)
{
    json_object *m = model();
    llmgw_page_t pg;

    for (pg = 0; pg < LLMGW_PAGE_N; pg++) {
        const char *html = page(m, pg, "n0nce");

        ck_assert_lacks(html, "<script>alert");
        ck_assert_has(html, "<!DOCTYPE html>", "assets/console.js",
                      "assets/console.css");
    }
    ck_assert_has(page(m, LLMGW_PAGE_OVERVIEW, NULL),
                  "gpt-&lt;script&gt;alert(1)&lt;/script&gt;", "gw&amp;co",
                  "data-k=\"models.0.model\"");
    ck_assert_has(parsed_text(page(m, LLMGW_PAGE_OVERVIEW, NULL)),
                  "|gpt-" EVIL "|", "|gw&co \xc2\xb7 0.1|", "|1,234,567|",
                  "|12.3 ms|", "|1.50|");
    ck_assert_has(parsed_text(page(m, LLMGW_PAGE_KEYS, NULL)), "|" EVIL "|",
                  "120 used, 5 reserved of 1,000 tokens a day; resets "
                  "2026-01-02 00:00:00 UTC",
                  "|9 left of 10|");
    ck_assert_has(parsed_text(page(m, LLMGW_PAGE_ROUTES, NULL)),
                  "|gpt-*|gpt-*|a&b|balancer://be|");
    ck_assert_has(parsed_text(page(m, LLMGW_PAGE_BACKENDS, NULL)),
                  "|balancer://be|", "|http://127.0.0.1:1|", "|up|");
    json_object_put(m);
}
END_TEST

START_TEST(forms_need_a_nonce)
{
    json_object *m = model();
    const char *html = page(m, LLMGW_PAGE_BACKENDS, NULL);

    ck_assert_lacks(html, "<form");
    html = page(m, LLMGW_PAGE_BACKENDS, "abc\"def");
    ck_assert_has(html,
                  "<form class=\"action\" method=\"post\" "
                  "action=\"/llm-admin/action\">",
                  "name=\"nonce\" value='abc\"def'",
                  "name=\"do\" value=\"drain\"",
                  "name=\"do\" value=\"disable\"",
                  "name=\"w\" value=\"http://127.0.0.1:1\"");
    ck_assert_lacks(html, "value=\"enable\"");
    ck_assert_has(page(m, LLMGW_PAGE_KEYS, "x"), "name=\"do\" value=\"reset\"",
                  "name=\"key\" value=\"key:&lt;script&gt;");
    ck_assert_has(page(m, LLMGW_PAGE_CACHE, "x"),
                  "name=\"do\" value=\"flush\"",
                  "name=\"model\" value=\"gpt-&lt;script&gt;");
    json_object_put(m);
}
END_TEST

/* The model with run-time changes: an alias added to gpt-* (a hostile
 * one), a configured name taken out, a route and a member added, a
 * configured member taken out. */
/* The model's members of its first balancer. */
static json_object *members_of(json_object *m)
{
    return json_object_object_get(
        json_object_array_get_idx(json_object_object_get(m, "balancers"), 0),
        "members");
}

static json_object *changed_model(void)
{
    json_object *m = model(), *routes, *members = members_of(m);
    const char *text =
        "{\"file\":\"/var/lib/llmgw/state.jsonl\",\"conf\":\"# lines\\n\","
        "\"changes\":["
        "{\"kind\":\"name\",\"route\":\"gpt-*\",\"name\":\"" EVIL "\","
        "\"configured\":false,\"removed\":false},"
        "{\"kind\":\"name\",\"route\":\"gpt-*\",\"name\":\"old-name\","
        "\"configured\":true,\"removed\":true},"
        "{\"kind\":\"route\",\"route\":\"fresh\",\"balancer\":\"balancer://"
        "be\",\"dialect\":\"ollama\",\"configured\":false,\"removed\":false},"
        "{\"kind\":\"member\",\"balancer\":\"balancer://be\",\"url\":"
        "\"http://127.0.0.1:2\",\"configured\":false,\"removed\":false,"
        "\"lbfactor\":3},"
        "{\"kind\":\"member\",\"balancer\":\"balancer://be\",\"url\":"
        "\"http://127.0.0.1:1\",\"configured\":true,\"removed\":true}]}";

    json_object_object_add(m, "manage", json_tokener_parse(text));
    routes = json_object_object_get(m, "routes");
    json_object_array_add(
        json_object_object_get(json_object_array_get_idx(routes, 0),
                               "patterns"),
        json_object_new_string(EVIL));
    json_object_array_add(
        routes, json_tokener_parse("{\"name\":\"fresh\",\"patterns\":"
                                   "[\"fresh\"],\"backend\":\"balancer://"
                                   "be\",\"dialect\":\"ollama\"}"));
    json_object_array_add(
        members, json_tokener_parse("{\"name\":\"http://127.0.0.1:2\","
                                    "\"usable\":true,\"lbfactor\":300}"));
    /* Added and removed: no change left, mod_proxy's Free flag only. */
    json_object_array_add(
        members, json_tokener_parse("{\"name\":\"http://127.0.0.1:3\","
                                    "\"removed\":true,\"lbfactor\":100}"));
    return m;
}

/* What a form holds, in order: hidden fields as name=value, inputs as
 * name:type[attributes], selects as name(options), the button as
 * [its accessible name]. */
static void form_fields(xmlNodePtr n, llmgw_pbuf_t *b)
{
    static const char *const shown[] = { "required", "min",       "max",
                                         "value",    "maxlength", NULL };
    int i;

    for (; n; n = n->next) {
        const char *tag = (const char *)n->name;
        char *v;

        if (n->type != XML_ELEMENT_NODE) {
            continue;
        }
        v = (char *)xmlGetProp(n, X_("type"));
        if (strcmp(tag, "input") == 0 && v && strcmp(v, "hidden") == 0) {
            pbuf_printf(b, "%s=%s ", prop(n, "name"), prop(n, "value"));
        }
        else if (strcmp(tag, "input") == 0) {
            pbuf_printf(b, "%s:%s[", prop(n, "name"), v ? v : "");
            for (i = 0; shown[i]; i++) {
                if (xmlHasProp(n, X_(shown[i]))) {
                    pbuf_printf(b, " %s=%s", shown[i], prop(n, shown[i]));
                }
            }
            pbuf_printf(b, " ] ");
        }
        else if (strcmp(tag, "option") == 0) {
            pbuf_printf(b, "%s,", prop(n, "value"));
        }
        else if (strcmp(tag, "button") == 0) {
            pbuf_printf(b, "[%s]", prop(n, "aria-label"));
        }
        else if (strcmp(tag, "select") == 0) {
            pbuf_printf(b, "%s(", prop(n, "name"));
        }
        xmlFree(v);
        form_fields(n->children, b);
        if (strcmp(tag, "select") == 0) {
            pbuf_printf(b, ") ");
        }
    }
}

/* The forms of html that post act, each as form_fields says, '|'
 * between them. */
static const char *forms_of(const char *html, const char *act)
{
    htmlDocPtr doc = htmlReadMemory(html, (int)strlen(html), NULL, "UTF-8",
                                    HTML_PARSE_NOERROR | HTML_PARSE_NONET);
    const char *want = apr_pstrcat(test_pool, "do=", act, " ", NULL);
    const char *out = "";
    xmlNodePtr n = xmlDocGetRootElement(doc);

    ck_assert_ptr_nonnull(doc);
    while (n) {
        if (n->type == XML_ELEMENT_NODE
            && strcmp((const char *)n->name, "form") == 0) {
            llmgw_pbuf_t b = { 0 };

            llmgw_pbuf_add(test_pool, &b, "", 0);
            form_fields(n->children, &b);
            b.b[b.len] = '\0';
            if (strstr(b.b, want)) {
                out = apr_pstrcat(test_pool, out, *out ? "|" : "", b.b, NULL);
            }
        }
        n = n->children && strcmp((const char *)n->name, "form") ? n->children
                                                                 : next_of(n);
    }
    xmlFreeDoc(doc);
    return out;
}

START_TEST(forms_post_the_changes)
{
    json_object *m = model();
    const char *routes = page(m, LLMGW_PAGE_ROUTES, "n0nce");
    const char *backends = page(m, LLMGW_PAGE_BACKENDS, "n0nce");

    ck_assert_str_eq(
        forms_of(routes, "name_add"),
        "route=gpt-* nonce=n0nce do=name_add name:text[ "
        "required=required maxlength=128 ] [Add a name to gpt-*]");
    /* A glob stays in httpd.conf: no button takes it out. */
    ck_assert_str_eq(forms_of(routes, "name_remove"),
                     "route=gpt-* name=a&b nonce=n0nce do=name_remove "
                     "[Remove a&b from gpt-*]");
    ck_assert_str_eq(forms_of(routes, "route_add"),
                     "nonce=n0nce do=route_add route:text[ required=required "
                     "maxlength=128 ] b(balancer://be,) dialect(openai,"
                     "ollama,) []");
    ck_assert_str_eq(forms_of(routes, "route_remove"), "");
    ck_assert_lacks(routes, "changes.conf");
    ck_assert_str_eq(forms_of(backends, "member_add"),
                     "b=balancer://be nonce=n0nce do=member_add w:url[ "
                     "required=required ] timeout:number[ min=1 max=86400 ] "
                     "lbfactor:number[ min=1 max=100 value=1 ] "
                     "probe(none,ollama,llamacpp,vllm,openai,) "
                     "[Add a member to balancer://be]");
    ck_assert_str_eq(forms_of(backends, "member_weight"),
                     "b=balancer://be w=http://127.0.0.1:1 nonce=n0nce "
                     "do=member_weight lbfactor:number[ required=required "
                     "min=1 max=100 value=1.5 ] [Set the weight of "
                     "http://127.0.0.1:1]");
    ck_assert_str_eq(forms_of(backends, "member_remove"),
                     "b=balancer://be w=http://127.0.0.1:1 nonce=n0nce "
                     "do=member_remove [Remove http://127.0.0.1:1]");
    ck_assert_lacks(page(m, LLMGW_PAGE_ROUTES, NULL), "<form", "<input");
    ck_assert_lacks(page(m, LLMGW_PAGE_BACKENDS, NULL), "<form", "<input");
    json_object_put(m);
}
END_TEST

START_TEST(changes_are_marked)
{
    json_object *m = changed_model();
    const char *html = page(m, LLMGW_PAGE_ROUTES, "n0nce"), *text;

    /* The added alias: text, marked, with its Remove; the hostile name
     * escaped in its hidden field as everywhere. */
    ck_assert_lacks(html, "<script>alert");
    ck_assert_has(html,
                  "<span>&lt;script&gt;alert(1)&lt;/script&gt;</span><span "
                  "class=\"mark\">run-time</span>",
                  "name=\"name\" value=\"&lt;script&gt;alert(1)&lt;/"
                  "script&gt;\"",
                  "<del>old-name</del><span class=\"mark\">removed at run "
                  "time</span>",
                  "aria-label=\"Put back old-name into gpt-*\"",
                  "name=\"do\" value=\"route_remove\"",
                  "<a href=\"/llm-admin/changes.conf\">Lines to paste into "
                  "httpd.conf</a>");
    text = parsed_text(html);
    ck_assert_has(text, "|" EVIL "|run-time|", "|fresh|run-time|Remove route|",
                  "5 changes made at run time differ from httpd.conf (kept in "
                  "/var/lib/llmgw/state.jsonl). |");
    /* A run-time route's own name goes with the route. */
    ck_assert_lacks(html, "aria-label=\"Remove fresh from fresh\"");
    html = page(m, LLMGW_PAGE_BACKENDS, NULL);
    text = parsed_text(html);
    ck_assert_has(html, "<del><span data-k=\"balancers.0.members.0.name\">"
                        "http://127.0.0.1:1</span></del>");
    ck_assert_has(text, "|http://127.0.0.1:1|removed at run time|",
                  "|http://127.0.0.1:2|run-time|",
                  "|http://127.0.0.1:3|removed at run time|");
    ck_assert_has(html, "href=\"/llm-admin/changes.conf\"");
    html = page(m, LLMGW_PAGE_BACKENDS, "n");
    ck_assert_has(
        forms_of(html, "member_weight"),
        "w=http://127.0.0.1:2 nonce=n do=member_weight "
        "lbfactor:number[ required=required min=1 max=100 value=3 ]");
    ck_assert_has(html, "aria-label=\"Put back http://127.0.0.1:1\"",
                  "<form class=\"action add\" method=\"post\"");
    ck_assert_lacks(html, "action=\"/llm-admin/action\" class=");
    /* A removed member is put back, not reweighted nor removed again. */
    ck_assert_has(forms_of(html, "member_add"),
                  "b=balancer://be w=http://127.0.0.1:3 nonce=n "
                  "do=member_add [Put back http://127.0.0.1:3]");
    ck_assert_lacks(forms_of(html, "member_weight"), "127.0.0.1:3",
                    "127.0.0.1:1");
    ck_assert_lacks(forms_of(html, "member_remove"), "127.0.0.1:3",
                    "127.0.0.1:1");
    json_object_put(m);
}
END_TEST

/* A member added at run time with a probe waits for it under mod_proxy's
 * HcFl: "probing", not "down"; one of httpd.conf with HcFl is down. */
START_TEST(members_waiting_for_their_probe)
{
    json_object *m = changed_model();
    const char *text;
    int i;

    json_object_array_add(
        json_object_object_get(json_object_object_get(m, "manage"), "changes"),
        json_tokener_parse("{\"kind\":\"member\",\"balancer\":"
                           "\"balancer://be\",\"url\":\"http://127.0.0.1:4\","
                           "\"configured\":false,\"removed\":false,"
                           "\"probe\":\"ollama\"}"));
    /* :4 added with that probe, :5 of httpd.conf: both with HcFl. */
    for (i = 4; i <= 5; i++) {
        json_object_array_add(
            members_of(m),
            json_tokener_parse(apr_psprintf(
                test_pool,
                "{\"name\":\"http://127.0.0.1:%d\",\"usable\":false,"
                "\"hcfail\":true,\"lbfactor\":100}",
                i)));
    }
    text = parsed_text(page(m, LLMGW_PAGE_BACKENDS, NULL));
    ck_assert_has(text, "|http://127.0.0.1:4|run-time|probing|",
                  "|http://127.0.0.1:5|down|");
    json_object_put(m);
}
END_TEST

START_TEST(xml_reads_back)
{
    json_object *m = model();
    apr_size_t len = 0;
    char *xml = llmgw_render_xml(test_pool, m, &len);
    xmlDocPtr doc;
    xmlNodePtr root, n;
    int models = 0;

    ck_assert_ptr_nonnull(xml);
    ck_assert_has(xml, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                  "<status xmlns=\"urn:mod_llm_gateway:status:1\">",
                  "<entry key=\"200\">3</entry>",
                  "<model>gpt-&lt;script&gt;alert(1)&lt;/script&gt;</model>");
    doc = xmlReadMemory(xml, (int)len, NULL, NULL, XML_PARSE_NONET);
    ck_assert_ptr_nonnull(doc);
    root = xmlDocGetRootElement(doc);
    ck_assert_str_eq((const char *)root->name, "status");
    for (n = root->children; n; n = n->next) {
        if (n->type == XML_ELEMENT_NODE
            && strcmp((const char *)n->name, "models") == 0) {
            xmlChar *t = xmlNodeGetContent(n->children->children->next);

            ck_assert_str_eq((const char *)t, "gpt-" EVIL);
            xmlFree(t);
            models++;
        }
    }
    ck_assert_int_eq(models, 1);
    xmlFreeDoc(doc);
    json_object_put(m);
}
END_TEST

START_TEST(not_utf8_is_replaced)
{
    json_object *m = model();
    const char *html;

    json_object_object_add(m, "server", json_object_new_string("a\xff\xfe"));
    html = page(m, LLMGW_PAGE_OVERVIEW, NULL);
    ck_assert_msg(strstr(html, "a?? &middot;") != NULL, "%.200s",
                  strstr(html, "<span"));
    ck_assert_lacks(html, "\xff");
    json_object_put(m);
}
END_TEST

START_TEST(values_and_pages)
{
    json_object *v;

    ck_assert_int_eq(llmgw_render_page(""), LLMGW_PAGE_OVERVIEW);
    ck_assert_int_eq(llmgw_render_page("index.html"), LLMGW_PAGE_OVERVIEW);
    ck_assert_int_eq(llmgw_render_page("backends"), LLMGW_PAGE_BACKENDS);
    ck_assert_int_eq(llmgw_render_page("keys"), LLMGW_PAGE_KEYS);
    ck_assert_int_eq(llmgw_render_page("Keys"), -1);
    ck_assert_int_eq(llmgw_render_page("../etc"), -1);
    ck_assert_str_eq(llmgw_render_value(test_pool, NULL, "n"), "\xe2\x80\x93");
    v = json_object_new_int64(-1234567);
    ck_assert_str_eq(llmgw_render_value(test_pool, v, "n"), "-1,234,567");
    ck_assert_str_eq(llmgw_render_value(test_pool, v, ""), "-1234567");
    json_object_put(v);
    v = json_object_new_double(0.25);
    ck_assert_str_eq(llmgw_render_value(test_pool, v, "pct"), "25.0 %");
    ck_assert_str_eq(llmgw_render_value(test_pool, v, "ms"), "250.0 ms");
    ck_assert_str_eq(llmgw_render_value(test_pool, v, "rate"), "0.25");
    json_object_put(v);
    v = json_object_new_int64(1767225661);
    ck_assert_str_eq(llmgw_render_value(test_pool, v, "time"),
                     "2026-01-01 00:01:01 UTC");
    json_object_put(v);
    v = json_object_new_string("");
    ck_assert_str_eq(llmgw_render_value(test_pool, v, ""), "\xe2\x80\x93");
    json_object_put(v);
}
END_TEST

Suite *render_suite(void)
{
    return test_suite("render", "core", 0,
                      TESTS(names_are_text, forms_need_a_nonce,
                            forms_post_the_changes, changes_are_marked,
                            members_waiting_for_their_probe, xml_reads_back,
                            not_utf8_is_replaced, values_and_pages));
}
