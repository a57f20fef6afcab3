/* llmgw_memcache: per server a mutex-guarded stack of idle connections;
 * each operation takes one, runs with the socket timeout set, and gives it
 * back, or closes it on any error. A stale connection (memcached restarted)
 * is retried once on a fresh one before the server counts as down. */
#include <stdlib.h>
#include <string.h>

#include <apr_network_io.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "llmgw_memcache.h"

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
};

apr_status_t llmgw_mc_create(apr_pool_t *p, const char *servers,
                             apr_interval_time_t timeout,
                             apr_interval_time_t retry, int max_idle,
                             llmgw_mc_t **out)
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
    apr_pool_destroy(c->pool);      /* closes the socket too */
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

/* One "\r\n"-terminated line into line[0..size), NUL-terminated. Answers
 * to our commands are short; a longer line is a protocol error. */
static apr_status_t read_line(mc_conn *c, char *line, apr_size_t size)
{
    apr_status_t rv;

    for (;;) {
        char *nl = memchr(c->buf + c->bpos, '\n', c->blen - c->bpos);

        if (nl) {
            apr_size_t n = (apr_size_t)(nl - (c->buf + c->bpos));
            apr_size_t keep = n && nl[-1] == '\r' ? n - 1 : n;

            if (keep >= size) {
                return APR_EGENERAL;
            }
            memcpy(line, c->buf + c->bpos, keep);
            line[keep] = '\0';
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

/* FNV-1a: any stable spread of keys over servers will do. */
static mc_server *server_for(llmgw_mc_t *mc, const char *key)
{
    apr_uint32_t h = 2166136261u;

    for (; *key; key++) {
        h = (h ^ (unsigned char)*key) * 16777619u;
    }
    return &mc->servers[h % (apr_uint32_t)mc->n];
}

typedef struct {
    struct iovec vec[3];
    int nvec;
    apr_pool_t *p;        /* for get */
    char **val;
    apr_size_t *len;
} mc_op;

/* Reads the answer to op; APR_EGENERAL for a protocol-level refusal, which
 * leaves the connection usable. */
static apr_status_t answer(mc_conn *c, mc_op *op, int *usable)
{
    char line[512], *bytes, *last;
    apr_status_t rv;
    apr_int64_t n;

    *usable = 0;
    if ((rv = read_line(c, line, sizeof(line))) != APR_SUCCESS) {
        return rv;
    }
    *usable = 1;
    if (!op->val) {
        if (!strcmp(line, "STORED") || !strcmp(line, "DELETED")) {
            return APR_SUCCESS;
        }
        if (!strcmp(line, "NOT_STORED")) {
            return APR_EEXIST;
        }
        return !strcmp(line, "NOT_FOUND") ? APR_NOTFOUND : APR_EGENERAL;
    }
    if (!strcmp(line, "END")) {
        return APR_NOTFOUND;
    }
    /* VALUE <key> <flags> <bytes> */
    if (strncmp(line, "VALUE ", 6) != 0
        || !apr_strtok(line + 6, " ", &last)
        || !apr_strtok(NULL, " ", &last)
        || !(bytes = apr_strtok(NULL, " ", &last))
        || (n = apr_atoi64(bytes)) < 0) {
        *usable = 0;
        return APR_EGENERAL;
    }
    *op->val = apr_palloc(op->p, (apr_size_t)n + 1);
    *usable = 0;
    if ((rv = read_bytes(c, *op->val, (apr_size_t)n)) != APR_SUCCESS
        || (rv = read_line(c, line, sizeof(line))) != APR_SUCCESS || *line
        || (rv = read_line(c, line, sizeof(line))) != APR_SUCCESS
        || strcmp(line, "END") != 0) {
        return rv ? rv : APR_EGENERAL;
    }
    (*op->val)[n] = '\0';
    *op->len = (apr_size_t)n;
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
            break;                  /* known down: fail fast */
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
        if (!reused || APR_STATUS_IS_TIMEUP(rv)) {
            /* A fresh connection failed, or the server is too slow. */
            drop_idle(s, apr_time_now() + mc->retry);
            break;
        }
        /* An idle connection went stale (memcached restarted): try once
         * more, on a new one. */
        drop_idle(s, 0);
    }
    return rv;
}

apr_status_t llmgw_mc_get(llmgw_mc_t *mc, apr_pool_t *p, const char *key,
                          char **val, apr_size_t *len)
{
    mc_op op = { { { 0 } }, 1, p, val, len };
    char *cmd = apr_pstrcat(p, "get ", key, "\r\n", NULL);

    op.vec[0].iov_base = cmd;
    op.vec[0].iov_len = strlen(cmd);
    return run(mc, key, &op);
}

static apr_status_t store(llmgw_mc_t *mc, const char *verb, const char *key,
                          const char *val, apr_size_t len, apr_uint32_t ttl)
{
    char head[400];
    mc_op op = { { { 0 } }, 3, NULL, NULL, NULL };

    if (strlen(key) > 250) {
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
    mc_op op = { { { 0 } }, 1, NULL, NULL, NULL };

    if (strlen(key) > 250) {
        return APR_EINVAL;
    }
    apr_snprintf(cmd, sizeof(cmd), "delete %s\r\n", key);
    op.vec[0].iov_base = cmd;
    op.vec[0].iov_len = strlen(cmd);
    return run(mc, key, &op);
}
