/* llmgw_memcache: per server a mutex-guarded stack of idle connections;
 * each operation takes one, runs with the socket timeout set, and gives it
 * back, or closes it on any error. A stale connection (memcached restarted)
 * is retried once on a fresh one before the server counts as down. Replies
 * are parsed as untrusted input: every line bounded, every number strict,
 * every length capped before anything is allocated. */
#include <stdlib.h>
#include <string.h>

#include <apr_network_io.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "llmgw_memcache.h"
#include "llmgw_hash.h"

typedef struct mc_conn {
    apr_pool_t *pool;
    apr_socket_t *sock;
    struct mc_conn *next;
    apr_size_t bpos, blen;
    char buf[4096];
} mc_conn;

typedef struct {
    const char *host;
    apr_port_t port;
    apr_thread_mutex_t *lock;
    mc_conn *idle;
    int nidle;
    apr_time_t down_until;
} mc_server;

struct llmgw_mc {
    mc_server *servers;
    int n;
    apr_interval_time_t timeout;
    apr_interval_time_t retry;
    int max_idle;
    apr_size_t max_value;
};

/* memcached's limit on keys. */
#define MAX_KEY 250

apr_status_t llmgw_mc_create(apr_pool_t *p, const char *servers,
                             apr_interval_time_t timeout,
                             apr_interval_time_t retry, int max_idle,
                             apr_size_t max_value, llmgw_mc_t **out)
{
    llmgw_mc_t *mc = apr_pcalloc(p, sizeof(*mc));
    char *list = apr_pstrdup(p, servers), *last, *hp;
    apr_status_t rv;
    int cap = 1;

    for (hp = list; *hp; hp++) {
        cap += *hp == ',';
    }
    mc->servers = apr_pcalloc(p, cap * sizeof(mc_server));
    mc->timeout = timeout;
    mc->retry = retry;
    mc->max_idle = max_idle;
    mc->max_value = max_value;
    for (hp = apr_strtok(list, ",", &last); hp;
         hp = apr_strtok(NULL, ",", &last)) {
        mc_server *s = &mc->servers[mc->n];
        char *host, *scope;

        rv = apr_parse_addr_port(&host, &scope, &s->port, hp, p);
        if (rv != APR_SUCCESS || !host) {
            return rv ? rv : APR_EINVAL;
        }
        s->host = host;
        s->port = s->port ? s->port : 11211;
        rv = apr_thread_mutex_create(&s->lock, APR_THREAD_MUTEX_DEFAULT, p);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        mc->n++;
    }
    if (!mc->n) {
        return APR_EINVAL;
    }
    *out = mc;
    return APR_SUCCESS;
}

static void conn_close(mc_conn *c)
{
    apr_pool_destroy(c->pool); /* closes the socket too */
}

static apr_status_t conn_open(llmgw_mc_t *mc, mc_server *s, mc_conn **out)
{
    apr_pool_t *pool;
    apr_sockaddr_t *sa;
    mc_conn *c;
    apr_status_t rv;

    /* A pool of its own (under the thread-safe global pool): connections
     * come and go while the child lives. */
    if ((rv = apr_pool_create(&pool, NULL)) != APR_SUCCESS) {
        return rv;
    }
    c = apr_pcalloc(pool, sizeof(*c));
    c->pool = pool;
    rv = apr_sockaddr_info_get(&sa, s->host, APR_UNSPEC, s->port, 0, pool);
    if (rv == APR_SUCCESS) {
        rv = apr_socket_create(&c->sock, sa->family, SOCK_STREAM,
                               APR_PROTO_TCP, pool);
    }
    if (rv == APR_SUCCESS) {
        apr_socket_opt_set(c->sock, APR_TCP_NODELAY, 1);
        apr_socket_timeout_set(c->sock, mc->timeout);
        rv = apr_socket_connect(c->sock, sa);
    }
    if (rv != APR_SUCCESS) {
        apr_pool_destroy(pool);
        return rv;
    }
    *out = c;
    return APR_SUCCESS;
}

/* An idle connection, or a new one; *reused tells which. A server known
 * to be down gives APR_ECONNREFUSED at once, with *down set. */
static apr_status_t conn_get(llmgw_mc_t *mc, mc_server *s, mc_conn **c,
                             int *reused, int *down)
{
    apr_thread_mutex_lock(s->lock);
    *down = s->down_until && apr_time_now() < s->down_until;
    if (*down) {
        apr_thread_mutex_unlock(s->lock);
        return APR_ECONNREFUSED;
    }
    *c = s->idle;
    if (*c) {
        s->idle = (*c)->next;
        s->nidle--;
    }
    apr_thread_mutex_unlock(s->lock);
    *reused = *c != NULL;
    return *c ? APR_SUCCESS : conn_open(mc, s, c);
}

static void conn_put(llmgw_mc_t *mc, mc_server *s, mc_conn *c)
{
    apr_thread_mutex_lock(s->lock);
    s->down_until = 0;
    if (s->nidle < mc->max_idle) {
        c->next = s->idle;
        s->idle = c;
        s->nidle++;
        c = NULL;
    }
    apr_thread_mutex_unlock(s->lock);
    if (c) {
        conn_close(c);
    }
}

/* When one connection failed, the idle ones are likely as dead. */
static void drop_idle(mc_server *s, apr_time_t down_until)
{
    apr_thread_mutex_lock(s->lock);
    if (down_until) {
        s->down_until = down_until;
    }
    while (s->idle) {
        mc_conn *c = s->idle;

        s->idle = c->next;
        conn_close(c);
    }
    s->nidle = 0;
    apr_thread_mutex_unlock(s->lock);
}

static apr_status_t send_all(mc_conn *c, const struct iovec *vec, int n)
{
    apr_status_t rv = APR_SUCCESS;
    int i;

    for (i = 0; i < n && rv == APR_SUCCESS; i++) {
        const char *d = vec[i].iov_base;
        apr_size_t left = vec[i].iov_len;

        while (left && rv == APR_SUCCESS) {
            apr_size_t w = left;

            rv = apr_socket_send(c->sock, d, &w);
            d += w;
            left -= w;
        }
    }
    return rv;
}

static apr_status_t fill(mc_conn *c)
{
    apr_size_t n;
    apr_status_t rv;

    if (c->bpos == c->blen) {
        c->bpos = c->blen = 0;
    }
    if (c->blen == sizeof(c->buf)) {
        memmove(c->buf, c->buf + c->bpos, c->blen - c->bpos);
        c->blen -= c->bpos;
        c->bpos = 0;
    }
    n = sizeof(c->buf) - c->blen;
    rv = apr_socket_recv(c->sock, c->buf + c->blen, &n);
    if (rv == APR_SUCCESS && n == 0) {
        rv = APR_EOF;
    }
    c->blen += n;
    return (rv == APR_EOF && n) ? APR_SUCCESS : rv;
}

/* One "\r\n"-terminated line into line[0..size), NUL-terminated.
 * Answers to our commands are short: a longer line, a bare "\n" or a NUL
 * is a protocol error (APR_EGENERAL). */
static apr_status_t read_line(mc_conn *c, char *line, apr_size_t size)
{
    apr_status_t rv;

    for (;;) {
        char *nl = memchr(c->buf + c->bpos, '\n', c->blen - c->bpos);

        if (nl) {
            apr_size_t n = (apr_size_t)(nl - (c->buf + c->bpos));

            if (n == 0 || nl[-1] != '\r' || n - 1 >= size
                || memchr(c->buf + c->bpos, '\0', n - 1)) {
                return APR_EGENERAL;
            }
            memcpy(line, c->buf + c->bpos, n - 1);
            line[n - 1] = '\0';
            c->bpos += n + 1;
            return APR_SUCCESS;
        }
        if (c->blen - c->bpos >= size) {
            return APR_EGENERAL;
        }
        if ((rv = fill(c)) != APR_SUCCESS) {
            return rv;
        }
    }
}

static apr_status_t read_bytes(mc_conn *c, char *out, apr_size_t len)
{
    apr_status_t rv;

    while (len) {
        apr_size_t n = c->blen - c->bpos;

        if (n == 0) {
            if ((rv = fill(c)) != APR_SUCCESS) {
                return rv;
            }
            continue;
        }
        if (n > len) {
            n = len;
        }
        memcpy(out, c->buf + c->bpos, n);
        c->bpos += n;
        out += n;
        len -= n;
    }
    return APR_SUCCESS;
}

/* Any stable spread of keys over servers will do. */
static mc_server *server_for(llmgw_mc_t *mc, const char *key)
{
    return &mc->servers[llmgw_fnv1a32(key, strlen(key)) % (apr_uint32_t)mc->n];
}

typedef struct {
    struct iovec vec[3];
    int nvec;
    apr_pool_t *p; /* for get */
    char **val;
    apr_size_t *len;
    const char *key;   /* the key asked for */
    apr_size_t max;    /* the longest value taken */
    apr_uint64_t *num; /* incr/decr: the counter's new value */
} mc_op;

/* s past the decimal digits at s (at least one, no sign), their value at
 * most max in *v; NULL if there are none or the value is larger. */
static const char *number(const char *s, apr_uint64_t max, apr_uint64_t *v)
{
    const char *start = s;

    for (*v = 0; *s >= '0' && *s <= '9'; s++) {
        apr_uint64_t d = (apr_uint64_t)(*s - '0');

        if (*v > (max - d) / 10) {
            return NULL;
        }
        *v = *v * 10 + d;
    }
    return s > start ? s : NULL;
}

/* "VALUE <key> <flags> <bytes>", exactly: the key asked for, flags a
 * 32-bit number, bytes in *n; APR_EGENERAL if the line is anything else,
 * APR_ENOSPC if the value is longer than max. */
static apr_status_t value_line(const char *line, const char *key,
                               apr_size_t max, apr_size_t *n)
{
    apr_size_t klen = strlen(key);
    apr_uint64_t flags, bytes;
    const char *s = line;

    if (strncmp(s, "VALUE ", 6) != 0 || strncmp(s + 6, key, klen) != 0
        || s[6 + klen] != ' ') {
        return APR_EGENERAL;
    }
    s += 6 + klen + 1;
    if (!(s = number(s, APR_UINT64_C(0xffffffff), &flags)) || *s++ != ' ') {
        return APR_EGENERAL;
    }
    /* The length is read whole first: a huge one is a value too big, not
     * garbage. Past 20 digits it is no length at all. */
    if (!(s = number(s, APR_UINT64_MAX, &bytes)) || *s) {
        return APR_EGENERAL;
    }
    if (bytes > max) {
        return APR_ENOSPC;
    }
    *n = (apr_size_t)bytes;
    return APR_SUCCESS;
}

/* The answer to incr or decr: the new value (digits, nothing else),
 * NOT_FOUND, or memcached's refusal (a value that is not a number). */
static apr_status_t counter_line(const char *line, apr_uint64_t *num,
                                 int *usable)
{
    const char *end;

    *usable = 1;
    if (!strcmp(line, "NOT_FOUND")) {
        return APR_NOTFOUND;
    }
    if ((end = number(line, APR_UINT64_MAX, num)) != NULL) {
        while (*end == ' ') { /* old memcacheds pad a decr's answer */
            end++;
        }
        if (!*end) {
            return APR_SUCCESS;
        }
    }
    *usable = strncmp(line, "CLIENT_ERROR ", 13) == 0
              || strncmp(line, "SERVER_ERROR ", 13) == 0;
    return APR_EGENERAL;
}

/* Reads the answer to op. *usable says whether the connection may carry
 * the next command: after SERVER_ERROR (memcached's refusal, the data
 * swallowed) it may; after anything unexpected, or a value left unread,
 * it may not. */
static apr_status_t answer(mc_conn *c, mc_op *op, int *usable)
{
    char line[512];
    apr_status_t rv;
    apr_size_t n = 0;

    *usable = 0;
    if ((rv = read_line(c, line, sizeof(line))) != APR_SUCCESS) {
        return rv;
    }
    if (op->num) {
        return counter_line(line, op->num, usable);
    }
    if (!op->val) {
        *usable = 1;
        if (!strcmp(line, "STORED") || !strcmp(line, "DELETED")) {
            return APR_SUCCESS;
        }
        if (!strcmp(line, "NOT_STORED") || !strcmp(line, "EXISTS")) {
            return APR_EEXIST;
        }
        if (!strcmp(line, "NOT_FOUND")) {
            return APR_NOTFOUND;
        }
        *usable = strncmp(line, "SERVER_ERROR ", 13) == 0;
        return APR_EGENERAL;
    }
    if (!strcmp(line, "END")) {
        *usable = 1;
        return APR_NOTFOUND;
    }
    if ((rv = value_line(line, op->key, op->max, &n)) != APR_SUCCESS) {
        return rv;
    }
    /* The data, its "\r\n", and END: nothing else. */
    *op->val = apr_palloc(op->p, n + 2);
    if ((rv = read_bytes(c, *op->val, n + 2)) != APR_SUCCESS) {
        return rv;
    }
    if ((*op->val)[n] != '\r' || (*op->val)[n + 1] != '\n') {
        return APR_EGENERAL;
    }
    if ((rv = read_line(c, line, sizeof(line))) != APR_SUCCESS) {
        return rv;
    }
    if (strcmp(line, "END") != 0) {
        return APR_EGENERAL;
    }
    (*op->val)[n] = '\0';
    *op->len = n;
    *usable = 1;
    return APR_SUCCESS;
}

static apr_status_t run(llmgw_mc_t *mc, const char *key, mc_op *op)
{
    mc_server *s = server_for(mc, key);
    apr_status_t rv = APR_EGENERAL;
    int attempt, reused, usable, down;

    for (attempt = 0; attempt < 2; attempt++) {
        mc_conn *c;

        rv = conn_get(mc, s, &c, &reused, &down);
        if (down) {
            break; /* known down: fail fast */
        }
        if (rv != APR_SUCCESS) {
            drop_idle(s, apr_time_now() + mc->retry);
            break;
        }
        rv = send_all(c, op->vec, op->nvec);
        if (rv == APR_SUCCESS) {
            rv = answer(c, op, &usable);
            if (usable) {
                conn_put(mc, s, c);
                break;
            }
        }
        conn_close(c);
        if (APR_STATUS_IS_ENOSPC(rv)) {
            break; /* a value too big: the server itself is fine */
        }
        if (!reused || APR_STATUS_IS_TIMEUP(rv) || rv == APR_EGENERAL) {
            /* A fresh connection failed, the server is too slow, or it
             * does not speak memcached's protocol. */
            drop_idle(s, apr_time_now() + mc->retry);
            break;
        }
        /* An idle connection went stale (memcached restarted): try once
         * more, on a new one. */
        drop_idle(s, 0);
    }
    return rv;
}

/* Whether memcached's text protocol can carry key: 1 to MAX_KEY bytes,
 * none a space or a control character. */
static int key_ok(const char *key)
{
    const unsigned char *k = (const unsigned char *)key;

    for (; *k; k++) {
        if (*k <= ' ' || *k == 0x7f
            || k - (const unsigned char *)key >= MAX_KEY) {
            return 0;
        }
    }
    return *key != '\0';
}

apr_status_t llmgw_mc_get(llmgw_mc_t *mc, apr_pool_t *p, const char *key,
                          char **val, apr_size_t *len)
{
    mc_op op = { { { 0 } }, 1, p, val, len, key, mc->max_value };
    char *cmd;

    if (!key_ok(key)) {
        return APR_EINVAL;
    }
    cmd = apr_pstrcat(p, "get ", key, "\r\n", NULL);

    op.vec[0].iov_base = cmd;
    op.vec[0].iov_len = strlen(cmd);
    return run(mc, key, &op);
}

static apr_status_t store(llmgw_mc_t *mc, const char *verb, const char *key,
                          const char *val, apr_size_t len, apr_uint32_t ttl)
{
    char head[400];
    mc_op op = { { { 0 } }, 3, NULL, NULL, NULL, key, 0 };

    if (!key_ok(key)) {
        return APR_EINVAL;
    }
    apr_snprintf(head, sizeof(head), "%s %s 0 %u %" APR_SIZE_T_FMT "\r\n",
                 verb, key, ttl, len);
    op.vec[0].iov_base = head;
    op.vec[0].iov_len = strlen(head);
    op.vec[1].iov_base = (char *)val;
    op.vec[1].iov_len = len;
    op.vec[2].iov_base = "\r\n";
    op.vec[2].iov_len = 2;
    return run(mc, key, &op);
}

apr_status_t llmgw_mc_set(llmgw_mc_t *mc, const char *key, const char *val,
                          apr_size_t len, apr_uint32_t ttl)
{
    return store(mc, "set", key, val, len, ttl);
}

apr_status_t llmgw_mc_add(llmgw_mc_t *mc, const char *key, const char *val,
                          apr_size_t len, apr_uint32_t ttl)
{
    return store(mc, "add", key, val, len, ttl);
}

apr_status_t llmgw_mc_delete(llmgw_mc_t *mc, const char *key)
{
    char cmd[300];
    mc_op op = { { { 0 } }, 1, NULL, NULL, NULL, key, 0 };

    if (!key_ok(key)) {
        return APR_EINVAL;
    }
    apr_snprintf(cmd, sizeof(cmd), "delete %s\r\n", key);
    op.vec[0].iov_base = cmd;
    op.vec[0].iov_len = strlen(cmd);
    return run(mc, key, &op);
}

apr_status_t llmgw_mc_add_number(llmgw_mc_t *mc, const char *key,
                                 apr_uint64_t value, apr_uint32_t ttl)
{
    char text[24];

    apr_snprintf(text, sizeof(text), "%" APR_UINT64_T_FMT, value);
    return store(mc, "add", key, text, strlen(text), ttl);
}

static apr_status_t count(llmgw_mc_t *mc, const char *verb, const char *key,
                          apr_uint64_t delta, apr_uint64_t *value)
{
    char cmd[320];
    mc_op op = { { { 0 } }, 1, NULL, NULL, NULL, key, 0, value };

    if (!key_ok(key)) {
        return APR_EINVAL;
    }
    apr_snprintf(cmd, sizeof(cmd), "%s %s %" APR_UINT64_T_FMT "\r\n", verb,
                 key, delta);
    op.vec[0].iov_base = cmd;
    op.vec[0].iov_len = strlen(cmd);
    return run(mc, key, &op);
}

apr_status_t llmgw_mc_incr(llmgw_mc_t *mc, const char *key, apr_uint64_t delta,
                           apr_uint64_t *value)
{
    return count(mc, "incr", key, delta, value);
}

apr_status_t llmgw_mc_decr(llmgw_mc_t *mc, const char *key, apr_uint64_t delta,
                           apr_uint64_t *value)
{
    return count(mc, "decr", key, delta, value);
}
