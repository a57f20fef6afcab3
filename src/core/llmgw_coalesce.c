/* llmgw_coalesce: one mechanism for threads, children and nodes. The
 * leader holds a lease on KEY (llmgw_store_claim) naming its generation G,
 * writes each piece to KEY:G:N, stores the answer over its lease and finally
 * writes KEY:G:end; followers tail that sequence. A store may evict pieces
 * before a follower reads them: it then takes the rest from the answer. */
#include <string.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_escape.h>
#include <apr_strings.h>

#include "llmgw_coalesce.h"
#include "llmgw_log.h"

/* How often a waiting follower looks again. */
#define POLL_INTERVAL apr_time_from_msec(5)
/* How long a follower waits for a piece before it looks whether the answer
 * is stored already (the end mark may have left the store unread). */
#define ANSWER_INTERVAL apr_time_from_msec(200)
/* How far past the piece it waits for a follower looks for later ones
 * (doubling the distance each time): 2^16 pieces. */
#define PROBES 17
/* A piece's key: KEY (64 hex), the generation (16 hex and a counter) and
 * its number. */
#define PIECE_KEY_MAX 160

struct llmgw_coalesce {
    apr_pool_t *p;   /* the request's */
    apr_pool_t *tmp; /* p's, cleared before each piece and each look: a
                      * long stream or a long wait must not grow p */
    llmgw_store_t *st;
    const char *key;
    const char *gen;
    const char *end_key; /* KEY:GEN:end */
    apr_size_t next;     /* next piece to write or read */
    apr_size_t kept;     /* follower: chunks of the answer's record
                                 * that the pieces read so far hold */
    apr_size_t ahead;    /* follower: the pieces before it exist(ed) */
    char *held;          /* follower: piece 0, read while joining */
    apr_size_t held_len;
    int lost;  /* follower: a piece left the store unread */
    char *buf; /* leader: a piece and its tag */
    apr_size_t cap;
    apr_interval_time_t timeout;
    apr_time_t deadline;  /* no progress by then: give up */
    apr_time_t answer_at; /* follower: then look for the answer */
    apr_uint32_t ttl;     /* seconds the lease and pieces live */
    int ended;
};

/* In buf (no allocation per piece: a long stream must not grow the
 * pool), unless a key is longer than it is today. */
static const char *piece_key(llmgw_coalesce_t *c, apr_size_t i,
                             char buf[PIECE_KEY_MAX])
{
    if (strlen(c->key) + strlen(c->gen) + 24 > PIECE_KEY_MAX) {
        return apr_psprintf(c->tmp, "%s:%s:%" APR_SIZE_T_FMT, c->key, c->gen,
                            i);
    }
    apr_snprintf(buf, PIECE_KEY_MAX, "%s:%s:%" APR_SIZE_T_FMT, c->key, c->gen,
                 i);
    return buf;
}

/* A copy in p of what was read into the scratch pool, NUL-terminated as
 * the store's values are. */
static char *keep(apr_pool_t *p, const char *v, apr_size_t n)
{
    char *k = apr_palloc(p, n + 1);

    memcpy(k, v, n);
    k[n] = '\0';
    return k;
}

static apr_status_t get_piece(llmgw_coalesce_t *c, apr_size_t i, char **val,
                              apr_size_t *len)
{
    char kb[PIECE_KEY_MAX];

    return llmgw_store_get(c->st, c->tmp, piece_key(c, i, kb), val, len);
}

/* A count written by a leader (the store's values are not trusted):
 * decimal digits only, at most 18 of them. */
static int parse_count(const char *s, apr_size_t n, apr_size_t *out)
{
    apr_size_t i, v = 0;

    if (n == 0 || n > 18) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (apr_size_t)(s[i] - '0');
    }
    *out = v;
    return 1;
}

/* Made once per generation: a follower looks for it every poll. */
static const char *end_key(llmgw_coalesce_t *c)
{
    if (!c->end_key) {
        c->end_key = apr_pstrcat(c->p, c->key, ":", c->gen, ":end", NULL);
    }
    return c->end_key;
}

static apr_status_t end_on_cleanup(void *data)
{
    llmgw_coalesce_t *c = data;

    /* A leader that never reached its filter (mod_proxy failed): let the
     * followers take over at once rather than wait out the lease. Its own
     * pool is going: the last steps run in one of the parent's. */
    if (!c->ended) {
        apr_pool_t *p;

        if (apr_pool_create(&p, apr_pool_parent_get(c->p)) == APR_SUCCESS) {
            c->p = p;
            c->end_key = NULL;
            llmgw_coalesce_end(c, 0, NULL, 0);
            apr_pool_destroy(p);
        }
    }
    return APR_SUCCESS;
}

/* Generation names: this child's random prefix and a counter (unique
 * across children and nodes, with no system call per request). */
static char child_seed[17];
static apr_uint32_t child_counter;

void llmgw_coalesce_child_init(void)
{
    unsigned char rnd[8];
    apr_uint64_t t = (apr_uint64_t)apr_time_now() ^ (apr_uint64_t)getpid();

    if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS) {
        memcpy(rnd, &t, sizeof(rnd));
    }
    apr_escape_hex(child_seed, rnd, sizeof(rnd), 0, NULL);
}

static const char *new_gen(apr_pool_t *p)
{
    return apr_psprintf(p, "%s%x", child_seed,
                        apr_atomic_inc32(&child_counter));
}

/* Whether the leader wrote piece c->ahead or one past it, looking ever
 * further: when the piece a follower waits for is gone, later ones show
 * that the generation goes on (and that the one waited for was evicted). */
static int leader_moved_on(llmgw_coalesce_t *c)
{
    apr_size_t d;
    char *v;
    apr_size_t n;
    int i;

    for (i = 0, d = 0; i < PROBES; i++, d = d ? d * 2 : 1) {
        if (get_piece(c, c->ahead + d, &v, &n) == APR_SUCCESS) {
            c->ahead += d + 1;
            return 1;
        }
    }
    return 0;
}

/* A follower's deadline passed: unless the leader moved on meanwhile. */
static int no_progress(llmgw_coalesce_t *c)
{
    apr_time_t now = apr_time_now();

    if (now <= c->deadline) {
        return 0;
    }
    if (c->gen && leader_moved_on(c)) {
        c->deadline = now + c->timeout;
        return 0;
    }
    return 1;
}

llmgw_co_role_t llmgw_coalesce_join(apr_pool_t *p, llmgw_store_t *st,
                                    const char *key, int stream,
                                    apr_interval_time_t timeout,
                                    llmgw_coalesce_t **out, char **val,
                                    apr_size_t *len)
{
    llmgw_coalesce_t *c = apr_pcalloc(p, sizeof(*c));
    const char *mine = new_gen(p);
    int waited = 0;

    c->p = p;
    c->st = st;
    c->key = key;
    c->timeout = timeout;
    c->ttl = (apr_uint32_t)apr_time_sec(timeout) + 60;
    c->deadline = apr_time_now() + timeout;
    *out = c;
    if (apr_pool_create(&c->tmp, p) != APR_SUCCESS) {
        return LLMGW_CO_NO_STORE;
    }
    for (;; waited = 1) {
        char *v;
        apr_size_t n;
        apr_status_t rv;

        apr_pool_clear(c->tmp);
        rv = llmgw_store_claim(st, c->tmp, key, mine, c->ttl, &v, &n);
        if (rv == APR_SUCCESS) {
            *val = keep(p, v, n);
            *len = n;
            return waited ? LLMGW_CO_DONE : LLMGW_CO_CACHED;
        }
        if (APR_STATUS_IS_NOTFOUND(rv)) {
            c->gen = mine;
            apr_pool_cleanup_register(p, c, end_on_cleanup,
                                      apr_pool_cleanup_null);
            return LLMGW_CO_LEADER;
        }
        if (!APR_STATUS_IS_EEXIST(rv)) {
            return waited ? LLMGW_CO_ALONE : LLMGW_CO_NO_STORE;
        }
        /* Another leads (v: its generation; NULL if its lease just
         * went): tail that generation. A plain follower waits for the end;
         * the pieces show progress. A failed leader's lease goes soon
         * after its end mark, and one of us takes over. */
        if (v) {
            if (!c->gen || strlen(c->gen) != n || memcmp(c->gen, v, n) != 0) {
                c->gen = apr_pstrmemdup(p, v, n);
                c->end_key = NULL;
                c->ahead = 0;
            }
            if (llmgw_store_get(st, c->tmp, end_key(c), &v, &n)
                == APR_SUCCESS) {
                if (n >= 2 && memcmp(v, "ok", 2) == 0
                    && llmgw_store_get(st, p, key, val, len) == APR_SUCCESS) {
                    return LLMGW_CO_DONE;
                }
            }
            else if (get_piece(c, c->ahead, &v, &n) == APR_SUCCESS) {
                /* A stream follower starts with piece 0, kept from here:
                 * it may be evicted before it is asked for again. One
                 * that comes too late for piece 0 waits for the answer. */
                if (stream && c->ahead == 0) {
                    c->held = keep(p, v, n);
                    c->held_len = n;
                    return LLMGW_CO_FOLLOW;
                }
                c->ahead++;
                c->deadline = apr_time_now() + timeout;
                continue;
            }
        }
        if (no_progress(c)) {
            LLMGW_LOG(c->p, LLMGW_LOG_INFO, 0,
                      LLMGW_LOGNO(0301) "coalescing: no progress from the "
                                        "leader in %" APR_TIME_T_FMT
                                        " ms; asking the backend",
                      apr_time_as_msec(timeout));
            return LLMGW_CO_ALONE;
        }
        apr_sleep(POLL_INTERVAL);
    }
}

void llmgw_coalesce_put(llmgw_coalesce_t *c, const char *data, apr_size_t len,
                        apr_size_t kept)
{
    char kb[PIECE_KEY_MAX], tag[24];
    apr_size_t n = (apr_size_t)apr_snprintf(tag, sizeof(tag),
                                            "%" APR_SIZE_T_FMT " ", kept);

    /* One buffer for all pieces: a long stream must not grow the pool. */
    if (n + len > c->cap) {
        c->cap = (n + len) * 2;
        c->buf = apr_palloc(c->p, c->cap);
    }
    memcpy(c->buf, tag, n);
    memcpy(c->buf + n, data, len);
    apr_pool_clear(c->tmp);
    llmgw_store_set(c->st, c->tmp, piece_key(c, c->next++, kb), c->buf,
                    n + len, c->ttl);
}

void llmgw_coalesce_orphan(llmgw_coalesce_t *c)
{
    LLMGW_LOG(
        c->p, LLMGW_LOG_INFO, 0,
        LLMGW_LOGNO(
            0302) "coalescing: the leader's client left after %" APR_SIZE_T_FMT
                  " pieces; the generation goes on for its "
                  "followers and the cache",
        c->next);
}

void llmgw_coalesce_end(llmgw_coalesce_t *c, int ok, const char *record,
                        apr_size_t len)
{
    const char *mark;

    if (c->ended) {
        return;
    }
    c->ended = 1;
    /* The answer first: a follower that finds a piece gone takes the
     * rest from it once it sees the end mark. */
    llmgw_store_settle(c->st, c->p, c->key, record, len);
    /* Only followers tailing pieces read the end mark; without pieces the
     * lease going away says it all (the answer is cached, or not). */
    if (c->next) {
        mark =
            ok ? apr_psprintf(c->p, "ok:%" APR_SIZE_T_FMT, c->next) : "error";
        llmgw_store_set(c->st, c->p, end_key(c), mark, strlen(mark), c->ttl);
    }
}

/* A piece as the leader wrote it: "KEPT " and the chunk's JSON. */
static apr_status_t took(llmgw_coalesce_t *c, char **data, apr_size_t *len)
{
    char *sp = memchr(*data, ' ', *len);
    apr_size_t n;

    if (!sp || !parse_count(*data, (apr_size_t)(sp - *data), &n)) {
        LLMGW_LOG(
            c->p, LLMGW_LOG_WARNING, 0,
            LLMGW_LOGNO(0303) "coalescing: piece %" APR_SIZE_T_FMT
                              " of the shared "
                              "generation is malformed; ending the stream",
            c->next);
        return APR_EGENERAL;
    }
    c->kept = n;
    *len -= (apr_size_t)(sp + 1 - *data);
    *data = sp + 1;
    c->next++;
    if (c->ahead < c->next) {
        c->ahead = c->next;
    }
    c->deadline = apr_time_now() + c->timeout;
    c->answer_at = apr_time_now() + ANSWER_INTERVAL;
    return APR_SUCCESS;
}

/* The end mark says how the generation ended: APR_EOF (all pieces read),
 * APR_INCOMPLETE (it went well, but a piece left the store unread),
 * APR_EGENERAL (it failed, or the mark does not read or counts fewer
 * pieces than were read); APR_NOTFOUND while there is none. */
static apr_status_t check_end(llmgw_coalesce_t *c, char **data,
                              apr_size_t *len)
{
    char *val;
    apr_size_t n, total;

    if (llmgw_store_get(c->st, c->tmp, end_key(c), &val, &n) != APR_SUCCESS) {
        return APR_NOTFOUND;
    }
    if (n < 3 || memcmp(val, "ok:", 3) != 0
        || !parse_count(val + 3, n - 3, &total)) {
        return APR_EGENERAL;
    }
    /* More pieces read than the leader says it wrote: the pieces or the
     * mark are not this generation's, and the stream is not known whole. */
    if (c->next > total) {
        return APR_EGENERAL;
    }
    if (c->next == total) {
        return APR_EOF;
    }
    /* The end is written after the last piece: look once more. */
    if (!c->lost && get_piece(c, c->next, data, len) == APR_SUCCESS) {
        return took(c, data, len);
    }
    LLMGW_LOG(
        c->p, LLMGW_LOG_DEBUG, 0,
        LLMGW_LOGNO(
            0304) "coalescing: piece %" APR_SIZE_T_FMT " of %" APR_SIZE_T_FMT
                  " left the store before this follower read it; the rest "
                  "comes from the stored answer",
        c->next, total);
    return APR_INCOMPLETE;
}

apr_status_t llmgw_coalesce_next(llmgw_coalesce_t *c, char **data,
                                 apr_size_t *len)
{
    apr_status_t rv;
    apr_time_t now;

    if (c->held) {
        *data = c->held;
        *len = c->held_len;
        c->held = NULL;
        return took(c, data, len);
    }
    for (;;) {
        apr_pool_clear(c->tmp); /* the piece returned before goes */
        if (!c->lost && get_piece(c, c->next, data, len) == APR_SUCCESS) {
            return took(c, data, len);
        }
        if ((rv = check_end(c, data, len)) != APR_NOTFOUND) {
            return rv;
        }
        now = apr_time_now();
        if (now > c->deadline) {
            if (!leader_moved_on(c)) {
                return APR_TIMEUP;
            }
            /* A later piece: the one awaited is gone; wait for the end. */
            c->lost = c->lost || c->ahead > c->next + 1;
            c->deadline = now + c->timeout;
            continue;
        }
        if (now > c->answer_at) {
            c->answer_at = now + ANSWER_INTERVAL;
            return APR_EAGAIN;
        }
        apr_sleep(POLL_INTERVAL);
    }
}

apr_status_t llmgw_coalesce_rest(llmgw_coalesce_t *c, char **val,
                                 apr_size_t *len, apr_size_t *kept)
{
    c->answer_at = apr_time_now() + ANSWER_INTERVAL;
    *kept = c->kept;
    return llmgw_store_get(c->st, c->p, c->key, val, len);
}
