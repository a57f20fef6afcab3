/* test_form.c: the console's POST bodies: fields decoded, anything odd
 * refused whole (names not the console's, twice, bad escapes, NULs, too
 * long, not UTF-8), the actions they name, and the session nonce (HMAC
 * SHA-256, RFC 4231's vectors) compared whole. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_form.h"
#include "test_core.h"

static const char *parse(const char *body, llmgw_form_t *f)
{
    return llmgw_form_parse(test_pool, body, strlen(body), llmgw_action_fields,
                            f);
}

START_TEST(fields_decoded)
{
    llmgw_form_t f;

    ck_assert_ptr_null(
        parse("do=drain&b=balancer%3A%2F%2Fbe&w=http://127.0.0.1:1&&"
              "model=a+b%2bc%C3%A9&nonce=",
              &f));
    ck_assert_int_eq(f.n, 5);
    ck_assert_str_eq(llmgw_form_get(&f, "do"), "drain");
    ck_assert_str_eq(llmgw_form_get(&f, "b"), "balancer://be");
    ck_assert_str_eq(llmgw_form_get(&f, "w"), "http://127.0.0.1:1");
    ck_assert_str_eq(llmgw_form_get(&f, "model"), "a b+c\xc3\xa9");
    ck_assert_str_eq(llmgw_form_get(&f, "nonce"), "");
    ck_assert_ptr_null(llmgw_form_get(&f, "key"));
    ck_assert_ptr_null(parse("", &f));
    ck_assert_int_eq(f.n, 0);
}
END_TEST

START_TEST(odd_bodies_refused_whole)
{
    static const char *const bad[] = {
        "do=drain&x=1",       /* not the console's */
        "do=drain&do=enable", /* twice */
        "do=%zz",             /* bad escape */
        "do=%4",              /* cut escape */
        "do=a%00b",           /* NUL */
        "d%00o=a",            /* NUL in a name */
        "model=%ff%fe",       /* not UTF-8 */
        "model=%ed%a0%80",    /* a surrogate */
        "model=%c0%af",       /* overlong */
        NULL,
    };
    char *big = apr_palloc(test_pool, LLMGW_FORM_BODY_MAX + 2);
    char *longval = apr_palloc(test_pool, LLMGW_FORM_VALUE_MAX + 8);
    llmgw_form_t f;
    int i;

    for (i = 0; bad[i]; i++) {
        f.n = 99;
        ck_assert_msg(parse(bad[i], &f) != NULL, "%s accepted", bad[i]);
        ck_assert_int_eq(f.n, 0);
    }
    memset(big, 'a', LLMGW_FORM_BODY_MAX + 1);
    memcpy(big, "do=", 3);
    big[LLMGW_FORM_BODY_MAX + 1] = '\0';
    ck_assert_ptr_nonnull(parse(big, &f));
    memcpy(longval, "key=", 4);
    memset(longval + 4, 'k', LLMGW_FORM_VALUE_MAX + 1);
    longval[LLMGW_FORM_VALUE_MAX + 5] = '\0';
    ck_assert_ptr_nonnull(parse(longval, &f));
    longval[LLMGW_FORM_VALUE_MAX + 4] = '\0';
    ck_assert_ptr_null(parse(longval, &f));
}
END_TEST

static const char *action(const char *body, llmgw_action_t *a)
{
    llmgw_form_t f;

    ck_assert_ptr_null(parse(body, &f));
    return llmgw_form_action(test_pool, &f, a);
}

START_TEST(actions)
{
    llmgw_action_t a;

    ck_assert_ptr_null(action("do=drain&b=balancer://be&w=http://x", &a));
    ck_assert_int_eq(a.kind, LLMGW_ACT_DRAIN);
    ck_assert_str_eq(a.balancer, "balancer://be");
    ck_assert_str_eq(a.member, "http://x");
    ck_assert_ptr_null(action("do=enable&b=balancer://be&w=http://x", &a));
    ck_assert_int_eq(a.kind, LLMGW_ACT_ENABLE);
    ck_assert_ptr_nonnull(action("do=disable&b=be&w=http://x", &a));
    ck_assert_ptr_nonnull(action("do=disable&b=balancer://be", &a));
    ck_assert_ptr_null(action("do=reset&kind=key&key=team-a", &a));
    ck_assert_str_eq(a.subject, "key:team-a");
    ck_assert_ptr_nonnull(action("do=reset&kind=key%3Aroute&key=a", &a));
    ck_assert_ptr_nonnull(action("do=reset&kind=key", &a));
    ck_assert_ptr_nonnull(action("do=reset&kind=&key=a", &a));
    ck_assert_ptr_null(action("do=reset&key=key%3Ateam-a", &a));
    ck_assert_str_eq(a.subject, "key:team-a");
    ck_assert_ptr_null(action("do=reset&key=key%23abc", &a));
    ck_assert_str_eq(a.subject, "key#abc");
    ck_assert_ptr_nonnull(action("do=reset&key=team-a", &a));
    ck_assert_ptr_null(action("do=flush", &a));
    ck_assert_int_eq(a.kind, LLMGW_ACT_FLUSH);
    ck_assert_ptr_null(a.model);
    ck_assert_ptr_null(action("do=flush&model=m1", &a));
    ck_assert_str_eq(a.model, "m1");
    ck_assert_ptr_nonnull(action("do=flush&model=", &a));
    ck_assert_ptr_nonnull(action("do=explode", &a));
    ck_assert_ptr_nonnull(action("b=balancer://be", &a));
    ck_assert_str_eq(llmgw_action_name(LLMGW_ACT_RESET), "reset");
}
END_TEST

START_TEST(nonces)
{
    /* RFC 4231, test case 2: key "Jefe". */
    char out[LLMGW_NONCE_LEN + 1];
    unsigned char key[131];

    llmgw_form_nonce((const unsigned char *)"Jefe", 4,
                     "what do ya want for nothing?", out);
    ck_assert_str_eq(out, "5bdcc146bf60754e6a042426089575c75a003f089d273983"
                          "9dec58b964ec3843");
    /* Test case 6: a key longer than the block is hashed first. */
    memset(key, 0xaa, sizeof(key));
    llmgw_form_nonce(key, sizeof(key),
                     "Test Using Larger Than Block-Size Key - Hash Key First",
                     out);
    ck_assert_str_eq(out, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c514"
                          "0546040f0ee37f54");
    ck_assert(llmgw_form_nonce_ok(key, sizeof(key),
                                  "Test Using Larger Than Block-Size Key - "
                                  "Hash Key First",
                                  out));
    out[63] ^= 1;
    ck_assert(!llmgw_form_nonce_ok(key, sizeof(key),
                                   "Test Using Larger Than Block-Size Key - "
                                   "Hash Key First",
                                   out));
    ck_assert(!llmgw_form_nonce_ok(key, 4, "s", ""));
    ck_assert(!llmgw_form_nonce_ok(key, 4, "s", NULL));
    ck_assert(llmgw_form_session_ok("0123456789abcdef0123456789abcdef"));
    ck_assert(!llmgw_form_session_ok("0123456789abcdef0123456789abcde"));
    ck_assert(!llmgw_form_session_ok("0123456789abcdef0123456789abcdef0"));
    ck_assert(!llmgw_form_session_ok("0123456789ABCDEF0123456789abcdef"));
    ck_assert(!llmgw_form_session_ok("0123456789abcdeg0123456789abcdef"));
    ck_assert(!llmgw_form_session_ok(NULL));
}
END_TEST

Suite *form_suite(void)
{
    return test_suite(
        "form", "core", 0,
        TESTS(fields_decoded, odd_bodies_refused_whole, actions, nonces));
}
