/* gen.c: the deterministic "model" of mockllm: request hashing, the word
 * generator, token counting and fake embeddings (see README.md). */

#include <math.h>
#include <string.h>

#include "mockllm.h"

/* 64 entries so a word is exactly the top 6 bits of a PRNG output.  Plain
 * lowercase ASCII so chunks never need JSON escaping and tests can split
 * the text on spaces. */
static const char *const vocab[64] = {
    "the", "of", "and", "to", "in", "is", "that", "for",
    "it", "as", "with", "on", "this", "be", "are", "by",
    "from", "at", "an", "or", "model", "token", "data", "system",
    "gateway", "request", "response", "stream", "server", "client",
    "value", "time",
    "first", "next", "result", "simple", "quick", "large", "small", "fast",
    "mock", "test", "state", "query", "cache", "route", "queue", "limit",
    "batch", "input", "output", "layer", "vector", "text", "word", "line",
    "node", "point", "signal", "world", "light", "river", "stone", "cloud"
};

uint64_t
mock_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t
mock_rng_init(uint64_t hash)
{
    /* xorshift has an all-zero fixed point. */
    return hash ? hash : 0x9e3779b97f4a7c15ULL;
}

/* xorshift64* : tiny, fast, and trivially reimplemented by a test that
 * wants to predict the text. */
uint64_t
mock_rng_next(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

const char *
mock_next_word(uint64_t *state, size_t *len)
{
    const char *w = vocab[mock_rng_next(state) >> 58];

    *len = strlen(w);
    return w;
}

/* Locale-independent on purpose: the count must not change with LC_ALL. */
long
mock_count_words(const char *s, size_t len)
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
void
mock_embedding(const char *text, size_t len, double *out, size_t dim)
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

void
mock_base64(mock_buf_t *b, const unsigned char *data, size_t len)
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
