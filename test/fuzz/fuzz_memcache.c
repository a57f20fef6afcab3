/* fuzz_memcache: the memcached client's reply parser, through a real
 * loopback connection: whatever answers on the memcached port is not
 * trusted. A server (started once, on 127.0.0.1) answers every
 * connection with the input's bytes, then ends its side and reads what
 * comes until the client leaves; the client runs get, set, add, incr,
 * decr, a numeric add and delete against it, with one idle connection kept between commands, so
 * what a reply leaves over meets the next command.
 * Input: the reply bytes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz.h"

#include "llmgw_memcache.h"

/* The largest value a get may return: llmgw_mc_create's cap. */
#define FUZZ_MC_MAX_VALUE ((apr_size_t)64 * 1024)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *reply; /* what a connection gets, under lock */
static size_t reply_len;
static int listener = -1;
static char servers[32];
static llmgw_mc_t *mc;
static apr_pool_t *mcp;

typedef struct {
    int fd;
    char *reply;
    size_t len;
} conn_t;

/* The reply, then EOF; the client's commands are read and dropped, so
 * the close never meets unread bytes (which would reset the connection
 * and make what the client sees depend on timing). */
static void *serve(void *arg)
{
    conn_t *c = arg;
    struct timeval tv = { 2, 0 };
    size_t off = 0;
    char buf[4096];

    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    while (off < c->len) {
        ssize_t n = send(c->fd, c->reply + off, c->len - off, MSG_NOSIGNAL);

        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    shutdown(c->fd, SHUT_WR);
    while (recv(c->fd, buf, sizeof(buf), 0) > 0) {
    }
    close(c->fd);
    free(c->reply);
    free(c);
    return NULL;
}

static void *acceptor(void *arg)
{
    for (;;) {
        conn_t *c = calloc(1, sizeof(*c));
        pthread_t t;

        if (!c || (c->fd = accept(listener, NULL, NULL)) < 0) {
            free(c);
            continue;
        }
        /* The reply of the input whose command made this connection: the
         * client waits for it before the next input starts. */
        pthread_mutex_lock(&lock);
        c->len = reply_len;
        c->reply = malloc(reply_len ? reply_len : 1);
        if (c->reply && reply_len) {
            memcpy(c->reply, reply, reply_len);
        }
        pthread_mutex_unlock(&lock);
        if (!c->reply || pthread_create(&t, NULL, serve, c) != 0) {
            close(c->fd);
            free(c->reply);
            free(c);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

static void start_server(void)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    pthread_t t;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = socket(AF_INET, SOCK_STREAM, 0);
    FUZZ_CHECK(listener >= 0
                   && bind(listener, (struct sockaddr *)&sa, sizeof(sa)) == 0
                   && listen(listener, 16) == 0
                   && getsockname(listener, (struct sockaddr *)&sa, &salen)
                          == 0,
               "no loopback listener");
    snprintf(servers, sizeof(servers), "127.0.0.1:%u",
             (unsigned)ntohs(sa.sin_port));
    FUZZ_CHECK(pthread_create(&t, NULL, acceptor, NULL) == 0, "no thread");
    pthread_detach(t);
}

/* The process's mapped size: APR's allocator may mmap a big block
 * itself, past ASan's and libFuzzer's malloc limits. */
static size_t mapped(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;

    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) {
            pages = 0;
        }
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

static void set_reply(const uint8_t *data, size_t size)
{
    pthread_mutex_lock(&lock);
    free(reply);
    reply = malloc(size ? size : 1);
    FUZZ_CHECK(reply, "out of memory");
    if (size) {
        memcpy(reply, data, size);
    }
    reply_len = size;
    pthread_mutex_unlock(&lock);
}

/* Ends with no idle connection, so the next input starts afresh: with
 * empty replies, a command either answers from what the kept connection
 * still holds (a line of it used up) or ends on EOF, which closes it. */
static void drop_idle(size_t size)
{
    size_t i;

    set_reply(NULL, 0);
    for (i = 0; i <= size; i++) {
        apr_status_t rv = llmgw_mc_delete(mc, "fuzz:key");

        if (rv != APR_SUCCESS && rv != APR_NOTFOUND && rv != APR_EEXIST
            && rv != APR_EGENERAL) {
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    apr_status_t rv;
    char *val = NULL;
    apr_size_t len = 0, before, after;

    if (!mc) {
        start_server();
        apr_pool_create(&mcp, NULL);
        /* retry -1: the server never counts as down, so every command of
         * every input is answered. */
        FUZZ_CHECK(llmgw_mc_create(mcp, servers, apr_time_from_msec(500), -1,
                                   1, FUZZ_MC_MAX_VALUE, &mc)
                       == APR_SUCCESS,
                   "mc_create");
    }
    set_reply(data, size);
    before = mapped();
    rv = llmgw_mc_get(mc, p, "fuzz:key", &val, &len);
    /* What the reply made the client take stays in p until the end: a
     * length the reply only claims must not become memory. (Threads of
     * the server come and go meanwhile: a few MB.) */
    after = mapped();
    FUZZ_CHECK(after < before + FUZZ_MC_MAX_VALUE + ((apr_size_t)64 << 20),
               "a get took %zu MB for a reply of %zu bytes",
               (after - before) >> 20, size);
    if (rv == APR_SUCCESS) {
        FUZZ_CHECK(val && len < size && len <= FUZZ_MC_MAX_VALUE
                       && val[len] == '\0',
                   "a value of %zu bytes from a "
                   "reply of %zu",
                   len, size);
    }
    rv = llmgw_mc_set(mc, "fuzz:key", "value", 5, 60);
    FUZZ_CHECK(rv != APR_SUCCESS || size >= 7, "stored without a reply");
    llmgw_mc_add(mc, "fuzz:lease", "1", 1, 60);
    {
        apr_uint64_t n = 0;

        rv = llmgw_mc_incr(mc, "fuzz:n", 1, &n);
        FUZZ_CHECK(rv != APR_SUCCESS || size >= 3, "a count without a reply");
        llmgw_mc_decr(mc, "fuzz:n", 1, &n);
        llmgw_mc_add_number(mc, "fuzz:n", 7, 60);
    }
    llmgw_mc_get(mc, p, "fuzz:other", &val, &len);
    llmgw_mc_delete(mc, "fuzz:key");
    drop_idle(size);
    apr_pool_destroy(p);
    return 0;
}
