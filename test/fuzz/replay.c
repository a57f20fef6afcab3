/* replay.c: runs a fuzz target's LLVMFuzzerTestOneInput over files and
 * directories of inputs, without libFuzzer (build/check replays every
 * corpus with it, even where clang's libFuzzer is missing). */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REPLAY_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(REPLAY_ASAN)
#include <sanitizer/common_interface_defs.h>
#define REPLAY_ASAN 1
#endif

#include "fuzz.h"

static const char *volatile current;

#ifdef REPLAY_ASAN
/* As libFuzzer's -malloc_limit_mb in build/check: no input is big enough
 * to need 256 MB at once; a size read from the input may be. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=256:allocator_may_return_null=0";
}
#endif

/* A finding ends the process; the input's name is then the useful line.
 * Called from a signal handler: write(2) only. */
static void name_input(void)
{
    const char *c = current;

    if (c) {
        static const char head[] = "replay: the failing input: ";

        if (write(2, head, sizeof(head) - 1) < 0 || write(2, c, strlen(c)) < 0
            || write(2, "\n", 1) < 0) {
            return;
        }
    }
}

static void on_abort(int sig)
{
    name_input();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long size;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        if (f) {
            fclose(f);
        }
        return 0;
    }
    /* Exactly sized, as libFuzzer does, so ASan sees reads past the end. */
    data = malloc(size ? (size_t)size : 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        fclose(f);
        free(data);
        return 0;
    }
    fclose(f);
    current = path;
    LLVMFuzzerTestOneInput(data, (size_t)size);
    current = NULL;
    free(data);
    return 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of a directory in name order, so a run is repeatable. */
static int run_dir(const char *dir, int *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i, size;
    int ok = 1;

    if (!d) {
        fprintf(stderr, "replay: cannot open %s\n", dir);
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(*names));
            if (!names) {
                abort();
            }
        }
        size = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(size);
        if (!names[n]) {
            abort();
        }
        snprintf(names[n], size, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n) {
        qsort(names, n, sizeof(*names), by_name);
    }
    for (i = 0; i < n; i++) {
        struct stat st;

        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            ok &= run_file(names[i]);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return ok;
}

int main(int argc, char **argv)
{
    int i, count = 0, ok = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    /* FUZZ_CHECK aborts; the sanitizers end the process their own way. */
    signal(SIGABRT, on_abort);
    signal(SIGSEGV, on_abort);
#ifdef REPLAY_ASAN
    __sanitizer_set_death_callback(name_input);
#endif
    for (i = 1; i < argc; i++) {
        struct stat st;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: no such input: %s\n", argv[i]);
            ok = 0;
        }
        else if (S_ISDIR(st.st_mode)) {
            ok &= run_dir(argv[i], &count);
        }
        else {
            ok &= run_file(argv[i]);
            count++;
        }
    }
    printf("replay: %d inputs, %s\n", count, ok ? "no findings" : "errors");
    return ok ? 0 : 1;
}
