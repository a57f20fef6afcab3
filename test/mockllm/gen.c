/* gen.c: the deterministic "model" of mockllm: request hashing, the word
 * generator, token counting, fake embeddings and the canned behaviours. */

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mockllm.h"

/* 64 entries so a word is exactly the top 6 bits of a PRNG output.  Plain
 * lowercase ASCII so chunks never need JSON escaping and tests can split
 * the text on spaces. */
static const char *const vocab[64] = {
    "the",    "of",     "and",    "to",      "in",      "is",       "that",
    "for",    "it",     "as",     "with",    "on",      "this",     "be",
    "are",    "by",     "from",   "at",      "an",      "or",       "model",
    "token",  "data",   "system", "gateway", "request", "response", "stream",
    "server", "client", "value",  "time",    "first",   "next",     "result",
    "simple", "quick",  "large",  "small",   "fast",    "mock",     "test",
    "state",  "query",  "cache",  "route",   "queue",   "limit",    "batch",
    "input",  "output", "layer",  "vector",  "text",    "word",     "line",
    "node",   "point",  "signal", "world",   "light",   "river",    "stone",
    "cloud"
};

uint64_t mock_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t mock_rng_init(uint64_t hash)
{
    /* xorshift has an all-zero fixed point. */
    return hash ? hash : 0x9e3779b97f4a7c15ULL;
}

/* xorshift64* : tiny, fast, and trivially reimplemented by a test that
 * wants to predict the text. */
uint64_t mock_rng_next(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

const char *mock_next_word(uint64_t *state, size_t *len)
{
    const char *w = vocab[mock_rng_next(state) >> 58];

    *len = strlen(w);
    return w;
}

/* Locale-independent on purpose: the count must not change with LC_ALL. */
long mock_count_words(const char *s, size_t len)
{
    long n = 0;
    int in_word = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        char c = s[i];
        int space = (c == ' ' || c == '\t' || c == '\n' || c == '\r'
                     || c == '\f' || c == '\v');

        if (!space && !in_word) {
            n++;
        }
        in_word = !space;
    }
    return n;
}

/* Unit length so cosine similarity behaves like real embeddings; the seed
 * is the text alone so the same text embeds the same under any model. */
void mock_embedding(const char *text, size_t len, double *out, size_t dim)
{
    uint64_t st = mock_rng_init(mock_fnv1a(MOCK_FNV_INIT, text, len));
    double norm = 0.0;
    size_t i;

    for (i = 0; i < dim; i++) {
        double u = ldexp((double)(mock_rng_next(&st) >> 11), -53);

        out[i] = 2.0 * u - 1.0;
        norm += out[i] * out[i];
    }
    norm = sqrt(norm);
    if (norm > 0.0) {
        for (i = 0; i < dim; i++) {
            out[i] /= norm;
        }
    }
}

void mock_base64(mock_buf_t *b, const unsigned char *data, size_t len)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    size_t i;

    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8)
                     | data[i + 2];

        out[0] = tab[(v >> 18) & 63];
        out[1] = tab[(v >> 12) & 63];
        out[2] = tab[(v >> 6) & 63];
        out[3] = tab[v & 63];
        mock_buf_put(b, out, 4);
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16;

        if (i + 1 < len) {
            v |= (uint32_t)data[i + 1] << 8;
        }
        out[0] = tab[(v >> 18) & 63];
        out[1] = tab[(v >> 12) & 63];
        out[2] = (i + 1 < len) ? tab[(v >> 6) & 63] : '=';
        out[3] = '=';
        mock_buf_put(b, out, 4);
    }
}

uint64_t mock_request_hash(const char *model, size_t model_len,
                           struct json_object *payload,
                           struct json_object *seed)
{
    uint64_t h = mock_fnv1a(MOCK_FNV_INIT, model, model_len);
    const char *s;
    size_t len = 0;

    h = mock_fnv1a(h, "\n", 1);
    s = json_object_to_json_string_length(payload, JSON_C_TO_STRING_PLAIN,
                                          &len);
    if (s != NULL) {
        h = mock_fnv1a(h, s, len);
    }
    h = mock_fnv1a(h, "\n", 1);
    if (seed != NULL) {
        s = json_object_to_json_string_length(seed, JSON_C_TO_STRING_PLAIN,
                                              &len);
        if (s != NULL) {
            h = mock_fnv1a(h, s, len);
        }
    }
    return h;
}

/* "string or array of strings"; adds the words and the number of texts. */
int mock_count_texts(struct json_object *v, long *words, size_t *ntexts)
{
    size_t i, n;

    if (json_object_is_type(v, json_type_string)) {
        *words += mock_count_words(json_object_get_string(v),
                                   (size_t)json_object_get_string_len(v));
        *ntexts = 1;
        return 0;
    }
    if (!json_object_is_type(v, json_type_array)) {
        return -1;
    }
    n = json_object_array_length(v);
    for (i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);

        if (!json_object_is_type(e, json_type_string)) {
            return -1;
        }
        *words += mock_count_words(json_object_get_string(e),
                                   (size_t)json_object_get_string_len(e));
    }
    *ntexts = n;
    return 0;
}

/* Calls fn on every text of a message's content: a string, or the "text"
 * parts of an array (OpenAI); anything else has no text we understand. */
static void content_texts(struct json_object *c,
                          void (*fn)(const char *s, size_t len, void *arg),
                          void *arg)
{
    size_t j, np;

    if (json_object_is_type(c, json_type_string)) {
        fn(json_object_get_string(c), (size_t)json_object_get_string_len(c),
           arg);
        return;
    }
    if (!json_object_is_type(c, json_type_array)) {
        return;
    }
    np = json_object_array_length(c);
    for (j = 0; j < np; j++) {
        struct json_object *p = json_object_array_get_idx(c, j);
        struct json_object *t = mock_member(p, "type");
        struct json_object *x = mock_member(p, "text");

        if (json_object_is_type(p, json_type_object)
            && json_object_is_type(t, json_type_string)
            && strcmp(json_object_get_string(t), "text") == 0
            && json_object_is_type(x, json_type_string)) {
            fn(json_object_get_string(x),
               (size_t)json_object_get_string_len(x), arg);
        }
    }
}

static void add_words(const char *s, size_t len, void *arg)
{
    *(long *)arg += mock_count_words(s, len);
}

/* Lenient about message shape: the mock counts what it understands rather
 * than second-guessing the gateway's forwarding. */
long mock_count_messages(struct json_object *messages)
{
    size_t i, n = json_object_array_length(messages);
    long words = 0;

    for (i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(messages, i);

        words += 3;
        if (json_object_is_type(m, json_type_object)) {
            content_texts(mock_member(m, "content"), add_words, &words);
        }
    }
    return words;
}

/* JSON mode wraps the words in {"answer":"..."}; an empty answer still
 * needs one piece to carry the braces. */
long mock_pieces(long n, int json_mode)
{
    return json_mode && n == 0 ? 1 : n;
}

/* Piece k of a text of n words.  Plain: "word " (the last word too).
 * JSON mode: '{"answer":"' opens the first piece, words are separated by
 * one space, '"}' closes the last piece; the words never need escaping. */
void mock_piece(mock_buf_t *b, uint64_t *rng, long k, long n, int json_mode)
{
    const char *w;
    size_t wl;

    if (json_mode) {
        mock_buf_puts(b, k == 0 ? "{\"answer\":\"" : " ");
    }
    if (n > 0) {
        w = mock_next_word(rng, &wl);
        mock_buf_put(b, w, wl);
        if (!json_mode) {
            mock_buf_put(b, " ", 1);
        }
    }
    if (json_mode && k == mock_pieces(n, json_mode) - 1) {
        mock_buf_puts(b, "\"}");
    }
}

void mock_text(mock_buf_t *b, uint64_t hash, long n, int json_mode)
{
    uint64_t rng = mock_rng_init(hash);
    long k, np = mock_pieces(n, json_mode);

    for (k = 0; k < np; k++) {
        mock_piece(b, &rng, k, n, json_mode);
    }
}

static int word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_';
}

static void find_weather(const char *s, size_t len, void *arg)
{
    static const char word[] = "weather";
    size_t i, wl = sizeof(word) - 1;

    for (i = 0; i + wl <= len; i++) {
        if (strncasecmp(s + i, word, wl) == 0
            && (i == 0 || !word_char(s[i - 1]))
            && (i + wl == len || !word_char(s[i + wl]))) {
            *(int *)arg = 1;
            return;
        }
    }
}

/* The canned tool call: when the request offers tools and the last user
 * message asks about the weather, the "model" calls the first tool.  Once
 * a tool result follows that message it answers in text again, so a test
 * can run the whole round trip.  Returns the tool's name, or NULL. */
const char *mock_tool_trigger(struct json_object *req,
                              struct json_object *messages, size_t *len)
{
    struct json_object *tools = mock_member(req, "tools");
    struct json_object *name, *m, *role;
    size_t i, n;
    int hit = 0;

    if (!json_object_is_type(tools, json_type_array)
        || json_object_array_length(tools) == 0
        || !json_object_is_type(messages, json_type_array)) {
        return NULL;
    }
    name = mock_member(
        mock_member(json_object_array_get_idx(tools, 0), "function"), "name");
    if (!json_object_is_type(name, json_type_string)
        || json_object_get_string_len(name) == 0) {
        return NULL;
    }
    n = json_object_array_length(messages);
    for (i = n; i > 0; i--) {
        m = json_object_array_get_idx(messages, i - 1);
        role = mock_member(m, "role");
        if (!json_object_is_type(role, json_type_string)) {
            continue;
        }
        if (strcmp(json_object_get_string(role), "tool") == 0) {
            return NULL;
        }
        if (strcmp(json_object_get_string(role), "user") == 0) {
            content_texts(mock_member(m, "content"), find_weather, &hit);
            break;
        }
    }
    if (!hit) {
        return NULL;
    }
    *len = (size_t)json_object_get_string_len(name);
    return json_object_get_string(name);
}

/* 64 hex digits that look like Ollama's sha256 digests: the first four
 * xorshift64* outputs seeded with FNV-1a of the name. */
void mock_digest(char out[65], const char *name, size_t len)
{
    uint64_t st = mock_rng_init(mock_fnv1a(MOCK_FNV_INIT, name, len));
    int i;

    for (i = 0; i < 4; i++) {
        snprintf(out + 16 * i, 17, "%016" PRIx64, mock_rng_next(&st));
    }
}
