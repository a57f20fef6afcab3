/* test_memcache.c: the memcached client against a fake memcached on
 * loopback (a thread here) that answers what each test scripts: good
 * replies, and hostile ones, which must fail fast and close the
 * connection, never abort, allocate what they claim, or pass as a value. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <apr_strings.h>
#include <apr_time.h>

#include "llmgw_memcache.h"
#include "test_core.h"

/* The largest value the client takes (its store's max-item). */
#define MAX_VALUE 1024
/* Long enough that a client waiting for bytes that never come is plainly
 * seen (it must not wait at all), short enough for a failing run. */
#define TIMEOUT apr_time_from_sec(4)

typedef struct {
    int lfd;
    int port;
    pthread_t thread;
    pthread_mutex_t lock;
    const char *reply; /* the answer to the next get */
    apr_size_t reply_len;
    int close_after;      /* close the connection after it */
    int conns;            /* connections accepted */
    int gets;             /* get commands seen */
    int closed_by_client; /* connections the client closed */
    char last_key[300];
    volatile int stop;
} fake_mc;

static fake_mc fake;

static void send_all(int fd, const char *s, apr_size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

        if (w <= 0) {
            return; /* the client went: fine */
        }
        s += w;
        n -= (apr_size_t)w;
    }
}

/* One byte, waiting until it comes or the fake stops (the client keeps
 * idle connections open); 0 at EOF or stop. */
static int read_byte(int fd, char *c)
{
    struct pollfd pf = { fd, POLLIN, 0 };

    while (!fake.stop) {
        if (poll(&pf, 1, 20) > 0) {
            return recv(fd, c, 1, 0) == 1;
        }
    }
    return 0;
}

/* One command line into line (without CRLF); 0 at EOF. */
static int read_cmd(int fd, char *line, apr_size_t size)
{
    apr_size_t n = 0;

    while (n + 1 < size) {
        char c;
        int r = read_byte(fd, &c);

        if (r <= 0) {
            return 0;
        }
        if (c == '\n') {
            if (n && line[n - 1] == '\r') {
                n--;
            }
            line[n] = '\0';
            return 1;
        }
        line[n++] = c;
    }
    return 0;
}

static void serve(int fd)
{
    char line[600];

    while (read_cmd(fd, line, sizeof(line))) {
        /* Reads and counters: the scripted answer. */
        if (strncmp(line, "get ", 4) == 0 || strncmp(line, "incr ", 5) == 0
            || strncmp(line, "decr ", 5) == 0) {
            int close_it;

            pthread_mutex_lock(&fake.lock);
            fake.gets++;
            apr_cpystrn(fake.last_key, strchr(line, ' ') + 1,
                        sizeof(fake.last_key));
            send_all(fd, fake.reply, fake.reply_len);
            close_it = fake.close_after;
            pthread_mutex_unlock(&fake.lock);
            if (close_it) {
                close(fd);
                return;
            }
        }
        else {
            /* set/add KEY FLAGS TTL BYTES: take the data, store nothing */
            char *bytes = strrchr(line, ' ');
            long n = bytes ? atol(bytes + 1) + 2 : 0;
            char c;

            while (strncmp(line, "delete", 6) != 0 && n-- > 0
                   && read_byte(fd, &c)) {
            }
            send_all(fd, "STORED\r\n", 8);
        }
    }
    pthread_mutex_lock(&fake.lock);
    fake.closed_by_client++;
    pthread_mutex_unlock(&fake.lock);
    close(fd);
}

static void *fake_main(void *arg)
{
    (void)arg;
    while (!fake.stop) {
        struct pollfd pf = { fake.lfd, POLLIN, 0 };
        int fd;

        if (poll(&pf, 1, 20) <= 0) {
            continue;
        }
        if ((fd = accept(fake.lfd, NULL, NULL)) < 0) {
            continue;
        }
        pthread_mutex_lock(&fake.lock);
        fake.conns++;
        pthread_mutex_unlock(&fake.lock);
        serve(fd);
    }
    return NULL;
}

static void fake_start(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int one = 1;

    test_pool_setup();
    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.lock, NULL);
    fake.lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fake.lfd, 0);
    setsockopt(fake.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fake.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fake.lfd, 8), 0);
    getsockname(fake.lfd, (struct sockaddr *)&sa, &sl);
    fake.port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(&fake.thread, NULL, fake_main, NULL), 0);
}

static void fake_stop(void)
{
    fake.stop = 1;
    pthread_join(fake.thread, NULL);
    close(fake.lfd);
    pthread_mutex_destroy(&fake.lock);
    test_pool_teardown();
}

/* The next get is answered with reply[0..len). */
static void script(const char *reply, apr_size_t len, int close_after)
{
    pthread_mutex_lock(&fake.lock);
    fake.reply = reply;
    fake.reply_len = len;
    fake.close_after = close_after;
    pthread_mutex_unlock(&fake.lock);
}

static int counter(const int *c)
{
    int v;

    pthread_mutex_lock(&fake.lock);
    v = *c;
    pthread_mutex_unlock(&fake.lock);
    return v;
}

/* Waits (a bounded while) for the client to have closed n connections. */
static int client_closed(int n)
{
    int i;

    for (i = 0; i < 200 && counter(&fake.closed_by_client) < n; i++) {
        apr_sleep(apr_time_from_msec(10));
    }
    return counter(&fake.closed_by_client) >= n;
}

static llmgw_mc_t *client(void)
{
    llmgw_mc_t *mc;
    const char *server = apr_psprintf(test_pool, "127.0.0.1:%d", fake.port);

    ck_assert_int_eq(llmgw_mc_create(test_pool, server, TIMEOUT,
                                     apr_time_from_sec(30), 2, MAX_VALUE, &mc),
                     APR_SUCCESS);
    return mc;
}

static apr_status_t get(llmgw_mc_t *mc, char **val, apr_size_t *len,
                        apr_interval_time_t *took)
{
    apr_time_t t0 = apr_time_now();
    apr_status_t rv;

    *val = NULL;
    *len = 0;
    rv = llmgw_mc_get(mc, test_pool, "k", val, len);
    *took = apr_time_now() - t0;
    return rv;
}

#define S(lit) lit, sizeof(lit) - 1

START_TEST(good_replies)
{
    llmgw_mc_t *mc = client();
    apr_interval_time_t took;
    char *val, *big, *line;
    apr_size_t len;

    script(S("VALUE k 0 5\r\nhel\0o\r\nEND\r\n"), 0);
    ck_assert_int_eq(get(mc, &val, &len, &took), APR_SUCCESS);
    ck_assert_uint_eq(len, 5);
    ck_assert(memcmp(val, "hel\0o", 5) == 0);
    ck_assert_int_eq(val[5], '\0');
    ck_assert_str_eq(fake.last_key, "k");
    script(S("END\r\n"), 0);
    ck_assert_int_eq(get(mc, &val, &len, &took), APR_NOTFOUND);
    /* A value of exactly the largest size is a value. */
    big = apr_palloc(test_pool, MAX_VALUE + 64);
    line = apr_psprintf(test_pool, "VALUE k 7 %d\r\n", MAX_VALUE);
    memcpy(big, line, strlen(line));
    memset(big + strlen(line), 'x', MAX_VALUE);
    memcpy(big + strlen(line) + MAX_VALUE, "\r\nEND\r\n", 7);
    script(big, strlen(line) + MAX_VALUE + 7, 0);
    ck_assert_int_eq(get(mc, &val, &len, &took), APR_SUCCESS);
    ck_assert_uint_eq(len, MAX_VALUE);
    /* One connection served them all. */
    ck_assert_int_eq(counter(&fake.conns), 1);
    ck_assert_int_eq(llmgw_mc_set(mc, "k", "v", 1, 10), APR_SUCCESS);
    ck_assert_int_eq(counter(&fake.conns), 1);
}
END_TEST

/* A value bigger than the client takes: refused from its VALUE line (no
 * allocation, no wait), the connection dropped since its bytes are
 * unread; the server is not marked down for it. */
START_TEST(too_big_is_refused_without_reading)
{
    static const char *const lines[] = {
        "VALUE k 0 9223372036854775807\r\n",
        "VALUE k 0 1073741824\r\n",
        "VALUE k 0 1025\r\n",
    };
    llmgw_mc_t *mc = client();
    apr_interval_time_t took;
    char *val;
    apr_size_t len;
    int i;

    for (i = 0; i < 3; i++) {
        script(lines[i], strlen(lines[i]), 0);
        ck_assert_int_eq(get(mc, &val, &len, &took), APR_ENOSPC);
        ck_assert_msg(took < TIMEOUT / 2, "%s waited", lines[i]);
        ck_assert(client_closed(i + 1));
        ck_assert_int_eq(counter(&fake.gets), i + 1);
    }
    script(S("VALUE k 0 2\r\nok\r\nEND\r\n"), 0);
    ck_assert_int_eq(get(mc, &val, &len, &took), APR_SUCCESS);
    ck_assert_str_eq(val, "ok");
}
END_TEST

/* Replies that are not memcached's: each fails at once (not after the
 * timeout), closes the connection, never passes as a value, and marks
 * the server down: the next get does not reach it. */
static const struct {
    const char *reply;
    apr_size_t len;
    int close_after;
} hostile[] = {
    { S("VALUE k 0 -1\r\n"), 0 },
    { S("VALUE k 0 -0\r\nEND\r\n"), 0 },
    { S("VALUE k 0 12a\r\n"), 0 },
    { S("VALUE k 0 +5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 0 0x5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 0  5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 0 \r\n"), 0 },
    { S("VALUE k 0\r\n"), 0 },
    { S("VALUE k 0 5 9\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 99999999999 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k x 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 0 99999999999999999999999\r\n"), 0 },
    { S("VALUE other 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE x 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE K 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE kk 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE  k 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 0 10\r\nhello"), 1 },
    { S("VALUE k 0 5\r\nhello\r\n"), 1 },
    { S("VALUE k 0 5\r\nhello\r\nEND"), 1 },
    { S("VALUE k 0 5\r\nhello\r\nENDX\r\n"), 0 },
    { S("VALUE k 0 5\r\nhello\r\nVALUE k 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k 0 5\r\nhelloXX\r\nEND\r\n"), 0 },
    { S("VALUE k 0 5\r\nhello\nEND\r\n"), 0 },
    { S("VALUE k 0 5\nhello\r\nEND\r\n"), 0 },
    { S("END\n"), 0 },
    { S("HELLO\r\n"), 0 },
    { S("\r\n"), 0 },
    { S("SERVER_ERROR out of memory\r\n"), 0 },
    { S("VAL\0UE k 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S("VALUE k\0 0 5\r\nhello\r\nEND\r\n"), 0 },
    { S(""), 1 },
};

START_TEST(hostile_replies_fail_fast)
{
    llmgw_mc_t *mc = client();
    apr_interval_time_t took;
    char *val;
    apr_size_t len;
    apr_status_t rv;

    script(hostile[_i].reply, hostile[_i].len, hostile[_i].close_after);
    rv = get(mc, &val, &len, &took);
    ck_assert_msg(rv != APR_SUCCESS && rv != APR_NOTFOUND,
                  "reply %d passed (%d)", _i, rv);
    ck_assert_msg(took < TIMEOUT / 2, "reply %d: waited %d ms", _i,
                  (int)apr_time_as_msec(took));
    ck_assert_msg(hostile[_i].close_after || client_closed(1),
                  "reply %d: connection kept", _i);
    /* Down: failed fast, without another connection or command. */
    script(S("VALUE k 0 2\r\nok\r\nEND\r\n"), 0);
    ck_assert_int_eq(get(mc, &val, &len, &took), APR_ECONNREFUSED);
    ck_assert_int_le(counter(&fake.gets), 1);
    ck_assert_int_eq(counter(&fake.conns), 1);
}
END_TEST

/* A line that never ends: bounded, refused, not buffered on. */
START_TEST(endless_line_is_bounded)
{
    llmgw_mc_t *mc = client();
    apr_size_t n = 1 << 20, len;
    char *junk = apr_palloc(test_pool, n), *val;
    apr_interval_time_t took;

    memset(junk, 'A', n);
    memcpy(junk, "VALUE k 0 5 ", 12);
    script(junk, n, 0);
    ck_assert_int_eq(get(mc, &val, &len, &took), APR_EGENERAL);
    ck_assert(took < TIMEOUT / 2);
    ck_assert(client_closed(1));
}
END_TEST

/* Keys go into a command line: one that is too long, empty, or could
 * break the line is refused before anything is sent. */
START_TEST(keys_are_bounded)
{
    llmgw_mc_t *mc = client();
    char *key = apr_palloc(test_pool, 300), *val;
    apr_size_t len;

    memset(key, 'a', 299);
    key[299] = '\0';
    ck_assert_int_eq(llmgw_mc_get(mc, test_pool, key, &val, &len), APR_EINVAL);
    ck_assert_int_eq(llmgw_mc_get(mc, test_pool, "a b", &val, &len),
                     APR_EINVAL);
    ck_assert_int_eq(llmgw_mc_get(mc, test_pool, "a\r\nflush_all", &val, &len),
                     APR_EINVAL);
    ck_assert_int_eq(llmgw_mc_get(mc, test_pool, "", &val, &len), APR_EINVAL);
    ck_assert_int_eq(counter(&fake.conns), 0);
}
END_TEST

/* Counters (the limits' cluster sync): incr and decr answer a number,
 * NOT_FOUND or memcached's refusal, each on a connection that goes on;
 * anything else fails fast and closes it. add_number stores the text. */
START_TEST(counters)
{
    llmgw_mc_t *mc = client();
    apr_uint64_t v = 0;

    script(S("42\r\n"), 0);
    ck_assert_int_eq(llmgw_mc_incr(mc, "n", 5, &v), APR_SUCCESS);
    ck_assert_uint_eq(v, 42);
    ck_assert_str_eq(fake.last_key, "n 5");
    script(S("18446744073709551615\r\n"), 0);
    ck_assert_int_eq(llmgw_mc_incr(mc, "n", 0, &v), APR_SUCCESS);
    ck_assert(v == APR_UINT64_MAX);
    script(S("7  \r\n"), 0); /* a decr's answer, padded */
    ck_assert_int_eq(llmgw_mc_decr(mc, "n", 1, &v), APR_SUCCESS);
    ck_assert_uint_eq(v, 7);
    ck_assert_str_eq(fake.last_key, "n 1");
    script(S("NOT_FOUND\r\n"), 0);
    ck_assert_int_eq(llmgw_mc_incr(mc, "n", 1, &v), APR_NOTFOUND);
    script(S("CLIENT_ERROR cannot increment or decrement non-numeric "
             "value\r\n"),
           0);
    ck_assert_int_eq(llmgw_mc_incr(mc, "n", 1, &v), APR_EGENERAL);
    ck_assert_int_eq(llmgw_mc_add_number(mc, "n", 12345, 60), APR_SUCCESS);
    ck_assert_int_eq(counter(&fake.conns), 1);
    ck_assert_int_eq(llmgw_mc_incr(mc, "a b", 1, &v), APR_EINVAL);
}
END_TEST

static const char *const bad_counters[] = {
    "-1\r\n",     "12a\r\n", "99999999999999999999999\r\n",
    " 5\r\n",     "\r\n",    "VALUE n 0 1\r\n1\r\nEND\r\n",
    "STORED\r\n", "5",       "",
};

START_TEST(hostile_counters_fail_fast)
{
    llmgw_mc_t *mc = client();
    apr_uint64_t v = 0;
    apr_time_t t0 = apr_time_now();
    apr_status_t rv;

    script(bad_counters[_i], strlen(bad_counters[_i]), 1);
    rv = llmgw_mc_incr(mc, "n", 1, &v);
    ck_assert_msg(rv != APR_SUCCESS && rv != APR_NOTFOUND, "reply %d passed",
                  _i);
    ck_assert_msg(apr_time_now() - t0 < TIMEOUT / 2, "reply %d waited", _i);
}
END_TEST

Suite *memcache_suite(void)
{
    Suite *s = suite_create("memcache");
    TCase *tc = test_case_with(
        s, "client", fake_start, fake_stop, 30,
        TESTS(good_replies, too_big_is_refused_without_reading,
              endless_line_is_bounded, keys_are_bounded, counters));

    tcase_add_loop_test(tc, hostile_replies_fail_fast, 0,
                        (int)(sizeof(hostile) / sizeof(hostile[0])));
    tcase_add_loop_test(tc, hostile_counters_fail_fast, 0,
                        (int)(sizeof(bad_counters) / sizeof(bad_counters[0])));
    return s;
}
