/* bench/malloc_count.c: the LD_PRELOAD shim of build/bench --malloc. It
 * counts the malloc family's calls of every process it is loaded into.
 *
 * Each process counts into a file of its own, $LLMGW_MALLOC_DIR/<pid>,
 * mapped shared, so the bench reads the counts at any moment without a
 * signal or an exit: an httpd child is read before and after a load and
 * the difference divided by the requests answered. A child made by fork()
 * gets a file of its own (pthread_atfork), so the parent's counts and each
 * child's stay apart. The calls go on to glibc's allocator (__libc_malloc
 * and its siblings), so nothing but the counting changes.
 *
 * Build: gcc -O2 -shared -fPIC -o malloc_count.so malloc_count.c
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* The file's layout, read by bench/allocs.py: eight little-endian 64-bit
 * words. */
#define MC_MAGIC 0x746e636f6c6c616dULL /* "mallocnt", little-endian */
struct mc_counts {
    uint64_t magic;
    uint64_t pid;
    uint64_t malloc;
    uint64_t calloc;
    uint64_t realloc;
    uint64_t free;     /* of a pointer that is not NULL */
    uint64_t memalign; /* posix_memalign, aligned_alloc, memalign, valloc */
    uint64_t bytes;    /* asked for by every call but free */
};

/* Where the counts go before the file is mapped (the dynamic loader's own
 * calls, before the constructor) and if it cannot be: not reported. */
static struct mc_counts mc_early;
static struct mc_counts *mc = &mc_early;

static void mc_add(uint64_t *field, size_t bytes)
{
    __atomic_fetch_add(field, 1, __ATOMIC_RELAXED);
    if (bytes)
        __atomic_fetch_add(&mc->bytes, bytes, __ATOMIC_RELAXED);
}

/* "<dir>/<pid>" into buf without stdio (which may allocate). */
static int mc_path(char *buf, size_t len, const char *dir, pid_t pid)
{
    char digits[24];
    size_t n = 0, d = strlen(dir);
    unsigned long v = (unsigned long)pid;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < sizeof(digits));
    if (d + 1 + n + 1 > len)
        return -1;
    memcpy(buf, dir, d);
    buf[d++] = '/';
    while (n)
        buf[d++] = digits[--n];
    buf[d] = '\0';
    return 0;
}

/* Maps a fresh, zeroed counts file for this process (O_TRUNC: a process
 * that exec()s keeps its pid, and its new image starts from zero). */
static void mc_map(void)
{
    const char *dir;
    char path[4096];
    struct mc_counts *m;
    int fd;

    mc = &mc_early;
    dir = getenv("LLMGW_MALLOC_DIR");
    if (!dir || !*dir || mc_path(path, sizeof(path), dir, getpid()) < 0)
        return;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (ftruncate(fd, sizeof(*m)) < 0) {
        close(fd);
        return;
    }
    m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return;
    m->pid = (uint64_t)getpid();
    __atomic_store_n(&m->magic, MC_MAGIC, __ATOMIC_RELEASE);
    mc = m;
}

/* The child's mapping is still the parent's file: unmap it and count
 * into a file of the child's own. */
static void mc_after_fork_child(void)
{
    if (mc != &mc_early)
        munmap(mc, sizeof(*mc));
    mc_map();
}

__attribute__((constructor)) static void mc_init(void)
{
    mc_map();
    pthread_atfork(NULL, NULL, mc_after_fork_child);
}

void *malloc(size_t n)
{
    mc_add(&mc->malloc, n);
    return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    mc_add(&mc->calloc, k * n);
    return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    mc_add(&mc->realloc, n);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p)
        mc_add(&mc->free, 0);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    mc_add(&mc->memalign, n);
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    mc_add(&mc->memalign, n);
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p;

    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    mc_add(&mc->memalign, n);
    p = __libc_memalign(align, n);
    if (!p && n)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    mc_add(&mc->memalign, n);
    return __libc_valloc(n);
}

void *pvalloc(size_t n)
{
    mc_add(&mc->memalign, n);
    return __libc_pvalloc(n);
}
