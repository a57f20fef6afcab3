/* fuzz_form: the console's POST bodies (from a client the Require lets
 * in, so still untrusted): the parser never reads past the body, refuses
 * or accepts whole, and what it accepts is what the body says: every
 * field allowed and once, every value UTF-8 without a NUL and within its
 * bound; the action read from it names what it needs.
 * Input: the body. */
#include <apr_strings.h>

#include "fuzz.h"

#include "llmgw_form.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    /* A copy of exactly size bytes: ASan sees a read past the body. */
    char *body = malloc(size ? size : 1);
    llmgw_form_t f;
    llmgw_action_t a;
    const char *why;
    int i, k;

    memcpy(body, data, size);
    why = llmgw_form_parse(p, body, size, llmgw_action_fields, &f);
    FUZZ_CHECK(!why || f.n == 0, "a refused body left %d fields", f.n);
    FUZZ_CHECK(why || size <= LLMGW_FORM_BODY_MAX, "a long body accepted");
    FUZZ_CHECK(f.n <= LLMGW_FORM_FIELDS, "%d fields", f.n);
    for (i = 0; i < f.n; i++) {
        const char *const *ok = llmgw_action_fields;

        while (*ok && strcmp(*ok, f.name[i])) {
            ok++;
        }
        FUZZ_CHECK(*ok, "field %s is not allowed", f.name[i]);
        FUZZ_CHECK(strlen(f.value[i]) <= LLMGW_FORM_VALUE_MAX, "value long");
        for (k = 0; k < i; k++) {
            FUZZ_CHECK(strcmp(f.name[k], f.name[i]), "%s twice", f.name[i]);
        }
    }
    if (!why && !llmgw_form_action(p, &f, &a)) {
        FUZZ_CHECK(a.kind != LLMGW_ACT_NONE, "no action");
        if (a.kind <= LLMGW_ACT_ENABLE) {
            FUZZ_CHECK(a.balancer && a.member && *a.member, "no member");
        }
        if (a.kind == LLMGW_ACT_RESET) {
            FUZZ_CHECK(a.subject && strpbrk(a.subject, ":#"), "no subject");
        }
    }
    free(body);
    apr_pool_destroy(p);
    return 0;
}
