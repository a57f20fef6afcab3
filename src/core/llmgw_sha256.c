/* llmgw_sha256: SHA-256 written from FIPS 180-4, once per cacheable
 * request (its canonical text, a few hundred bytes): portable C, and the
 * x86-64 SHA extensions where the CPU has them (~5 x faster a block). */
#include <string.h>

#include "llmgw_sha256.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define LLMGW_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const apr_uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress_c(apr_uint32_t *hs, const unsigned char *blk)
{
    apr_uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
    int i;

    for (i = 0; i < 16; i++) {
        w[i] =
            (apr_uint32_t)blk[4 * i] << 24 | (apr_uint32_t)blk[4 * i + 1] << 16
            | (apr_uint32_t)blk[4 * i + 2] << 8 | (apr_uint32_t)blk[4 * i + 3];
    }
    for (i = 16; i < 64; i++) {
        apr_uint32_t s0 =
            ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        apr_uint32_t s1 =
            ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);

        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    /* The eight working variables in locals, not an array shifted each
     * round: the compiler keeps them in registers. */
    a = hs[0], b = hs[1], c = hs[2], d = hs[3];
    e = hs[4], f = hs[5], g = hs[6], h = hs[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25))
             + ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22))
             + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    hs[0] += a;
    hs[1] += b;
    hs[2] += c;
    hs[3] += d;
    hs[4] += e;
    hs[5] += f;
    hs[6] += g;
    hs[7] += h;
}

#ifdef LLMGW_SHA_NI
/* The same with SHA-NI: the state as two registers, ABEF and CDGH (lane 3
 * first), two rounds per sha256rnds2, the schedule four words at a time
 * (msg1: W[t-16] + s0(W[t-15]); + W[t-7]; msg2: + s1(W[t-2])). */
__attribute__((target("sha,sse4.1"))) static void compress_ni(
    apr_uint32_t *hs, const unsigned char *blk)
{
    const __m128i bswap =
        _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i abef, cdgh, abef0, cdgh0, t, m, w[4];
    int i;

    t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)hs), 0xB1);
    cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(hs + 4)), 0x1B);
    abef = _mm_alignr_epi8(t, cdgh, 8);
    cdgh = _mm_blend_epi16(cdgh, t, 0xF0);
    abef0 = abef;
    cdgh0 = cdgh;
    for (i = 0; i < 16; i++) {
        /* w[i & 3]: words 4i..4i+3, replacing 4(i-4)..4(i-4)+3. */
        if (i < 4) {
            w[i] = _mm_shuffle_epi8(
                _mm_loadu_si128((const __m128i *)(blk + 16 * i)), bswap);
        }
        else {
            t = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
            t = _mm_add_epi32(
                t, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
            w[i & 3] = _mm_sha256msg2_epu32(t, w[(i + 3) & 3]);
        }
        m = _mm_add_epi32(w[i & 3],
                          _mm_loadu_si128((const __m128i *)(K + 4 * i)));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
    t = _mm_shuffle_epi32(abef, 0x1B);
    cdgh = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)hs, _mm_blend_epi16(t, cdgh, 0xF0));
    _mm_storeu_si128((__m128i *)(hs + 4), _mm_alignr_epi8(cdgh, t, 8));
}

/* -1 not yet asked, 0 portable C, 1 SHA-NI. Every thread computes the same
 * answer, so a race on it is harmless. */
static int ni = -1;

static int cpu_has_sha_ni(void)
{
    unsigned int a, b, c, d;

    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1)
           && (c & bit_SSSE3) && __get_cpuid_count(7, 0, &a, &b, &c, &d)
           && (b & bit_SHA);
}
#endif

int llmgw_sha256_use_cpu(int on)
{
#ifdef LLMGW_SHA_NI
    int mode = on && cpu_has_sha_ni();

    __atomic_store_n(&ni, mode, __ATOMIC_RELAXED);
    return mode;
#else
    (void)on;
    return 0;
#endif
}

static void compress(llmgw_sha256_t *st, const unsigned char *blk)
{
#ifdef LLMGW_SHA_NI
    int mode = __atomic_load_n(&ni, __ATOMIC_RELAXED);

    if (mode < 0) {
        mode = llmgw_sha256_use_cpu(1);
    }
    if (mode) {
        compress_ni(st->h, blk);
        return;
    }
#endif
    compress_c(st->h, blk);
}

void llmgw_sha256_init(llmgw_sha256_t *c)
{
    static const apr_uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                        0xa54ff53a, 0x510e527f, 0x9b05688c,
                                        0x1f83d9ab, 0x5be0cd19 };

    memcpy(c->h, h0, sizeof(h0));
    c->total = 0;
    c->used = 0;
}

void llmgw_sha256_update(llmgw_sha256_t *c, const void *data, apr_size_t len)
{
    const unsigned char *d = data;

    c->total += len;
    while (len) {
        apr_size_t n = 64 - c->used < len ? 64 - c->used : len;

        memcpy(c->block + c->used, d, n);
        c->used += n;
        d += n;
        len -= n;
        if (c->used == 64) {
            compress(c, c->block);
            c->used = 0;
        }
    }
}

void llmgw_sha256_final(llmgw_sha256_t *c, unsigned char out[LLMGW_SHA256_LEN])
{
    apr_uint64_t bits = c->total * 8;
    int i;

    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        compress(c, c->block);
        c->used = 0;
    }
    memset(c->block + c->used, 0, 56 - c->used);
    for (i = 0; i < 8; i++) {
        c->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    compress(c, c->block);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

const char *llmgw_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[LLMGW_SHA256_LEN];
    llmgw_sha256_t c;
    char *out = apr_palloc(p, 2 * LLMGW_SHA256_LEN + 1);
    int i;

    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, data, len);
    llmgw_sha256_final(&c, md);
    for (i = 0; i < LLMGW_SHA256_LEN; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * LLMGW_SHA256_LEN] = '\0';
    return out;
}
