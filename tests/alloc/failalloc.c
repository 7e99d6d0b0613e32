/*
 * failalloc.c - the fault-injecting allocator of failalloc.h.
 *
 * The test executable is linked with -Wl,--wrap=SYM for each function below,
 * so calls to SYM from our code land in __wrap_SYM, which counts the call,
 * fails it when it is the one armed to fail, and otherwise calls the real
 * allocator (__real_SYM: libc's, or ASan's interceptor in the sanitizer
 * build) and records the block in a pointer set. free removes it. The set
 * lives in memory from __real_malloc so the wrappers never recurse.
 */
#include "failalloc.h"

#include <errno.h>
#include <execinfo.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t m, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_reallocarray(void *p, size_t m, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void *__real_aligned_alloc(size_t align, size_t n);
int __real_posix_memalign(void **out, size_t align, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t m, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_reallocarray(void *p, size_t m, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
int __wrap_asprintf(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *__wrap_aligned_alloc(size_t align, size_t n);
int __wrap_posix_memalign(void **out, size_t align, size_t n);

typedef struct slot {
    void *p;       /* NULL: empty; TOMB: deleted */
    size_t size;
    void *caller;
} slot;

#define TOMB ((void *)1)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int armed, trace;
/* Inside a jansson reader: allocations there are neither counted nor failed
 * (jansson 2.14's lexer ignores a failed buffer growth and then writes past
 * the buffer: not our code, not ours to fix). The reader as a whole is one
 * failure point instead, failing as jansson does when it notices: NULL with
 * json_error_out_of_memory. */
static __thread int benign;
static long count, fail_at, injected, live;
static int persist;  /* fail every allocation from fail_at on */
static slot *set;
static size_t cap, used;  /* used counts live and tombstones */

static size_t hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static void set_put(void *p, size_t size, void *caller);

static void set_grow(void)
{
    slot *old = set;
    size_t ocap = cap;
    cap = cap ? cap * 2 : 1024;
    set = __real_calloc(cap, sizeof *set);
    if (!set) {
        fputs("failalloc: out of memory for the live set\n", stderr);
        abort();
    }
    used = live = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].p && old[i].p != TOMB)
            set_put(old[i].p, old[i].size, old[i].caller);
    __real_free(old);
}

static void set_put(void *p, size_t size, void *caller)
{
    if ((used + 1) * 2 > cap)
        set_grow();
    size_t i = hash(p) & (cap - 1);
    while (set[i].p && set[i].p != TOMB)
        i = (i + 1) & (cap - 1);
    if (!set[i].p)
        used++;
    set[i] = (slot){p, size, caller};
    live++;
}

static void set_del(void *p)
{
    if (!cap)
        return;
    size_t i = hash(p) & (cap - 1);
    while (set[i].p) {
        if (set[i].p == p) {
            set[i].p = TOMB;
            live--;
            return;
        }
        i = (i + 1) & (cap - 1);
    }
}

/* One allocation call: non-zero when it must fail. */
static int enter(void)
{
    int fail = 0;
    if (benign)
        return 0;
    pthread_mutex_lock(&lock);
    if (armed) {
        count++;
        if (count == fail_at || (persist && fail_at > 0 && count > fail_at)) {
            injected++;
            fail = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    if (fail && trace) {
        void *bt[16];
        int n = backtrace(bt, 16);
        fputs("failalloc: failing this allocation:\n", stderr);
        backtrace_symbols_fd(bt, n, 2);
    }
    return fail;
}

static void track(void *p, size_t size, void *caller)
{
    if (!p)
        return;
    pthread_mutex_lock(&lock);
    if (armed)
        set_put(p, size, caller);
    pthread_mutex_unlock(&lock);
}

static void untrack(void *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&lock);
    set_del(p);
    pthread_mutex_unlock(&lock);
}

#define CALLER __builtin_return_address(0)

void *__wrap_malloc(size_t n)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(n);
    track(p, n, CALLER);
    return p;
}

void *__wrap_calloc(size_t m, size_t n)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_calloc(m, n);
    track(p, m * n, CALLER);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;  /* p stays valid, as realloc promises */
    }
    void *q = __real_realloc(p, n);
    if (q || n == 0)
        untrack(p);
    track(q, n, CALLER);
    return q;
}

void *__wrap_reallocarray(void *p, size_t m, size_t n)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = __real_reallocarray(p, m, n);
    if (q)
        untrack(p);
    track(q, m * n, CALLER);
    return q;
}

void __wrap_free(void *p)
{
    untrack(p);
    __real_free(p);
}

char *__wrap_strdup(const char *s)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;
    }
    char *p = __real_strdup(s);
    track(p, p ? strlen(p) + 1 : 0, CALLER);
    return p;
}

char *__wrap_strndup(const char *s, size_t n)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;
    }
    char *p = __real_strndup(s, n);
    track(p, p ? strlen(p) + 1 : 0, CALLER);
    return p;
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
    if (enter()) {
        errno = ENOMEM;
        *out = NULL;
        return -1;
    }
    int r = __real_vasprintf(out, fmt, ap);
    if (r >= 0)
        track(*out, (size_t)r + 1, CALLER);
    return r;
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
    if (enter()) {
        errno = ENOMEM;
        *out = NULL;
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    int r = __real_vasprintf(out, fmt, ap);
    va_end(ap);
    if (r >= 0)
        track(*out, (size_t)r + 1, CALLER);
    return r;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (enter()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_aligned_alloc(align, n);
    track(p, n, CALLER);
    return p;
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    if (enter())
        return ENOMEM;
    int r = __real_posix_memalign(out, align, n);
    if (r == 0)
        track(*out, n, CALLER);
    return r;
}

json_t *__real_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);
json_t *__real_json_loads(const char *s, size_t flags, json_error_t *error);
json_t *__real_json_load_file(const char *path, size_t flags, json_error_t *error);
json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);
json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *error);
json_t *__wrap_json_load_file(const char *path, size_t flags, json_error_t *error);

static json_t *load_oom(json_error_t *error)
{
    if (error) {
        memset(error, 0, sizeof *error);
        error->line = error->column = error->position = -1;
        snprintf(error->text, sizeof error->text, "out of memory");
        error->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_out_of_memory;
    }
    return NULL;
}

json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error)
{
    if (enter())
        return load_oom(error);
    benign++;
    json_t *v = __real_json_loadb(buf, len, flags, error);
    benign--;
    return v;
}

json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *error)
{
    if (enter())
        return load_oom(error);
    benign++;
    json_t *v = __real_json_loads(s, flags, error);
    benign--;
    return v;
}

json_t *__wrap_json_load_file(const char *path, size_t flags, json_error_t *error)
{
    if (enter())
        return load_oom(error);
    benign++;
    json_t *v = __real_json_load_file(path, flags, error);
    benign--;
    return v;
}

/* Jansson is a shared library: --wrap cannot reach it, its hooks can. */
static void *json_malloc(size_t n)
{
    if (enter())
        return NULL;
    void *p = __real_malloc(n);
    track(p, n, CALLER);
    return p;
}

static void json_free(void *p)
{
    __wrap_free(p);
}

void failalloc_init(void)
{
    void *bt[1];
    backtrace(bt, 1);  /* loads the unwinder now, not inside a run */
    trace = getenv("QUERN_ALLOCFAIL_TRACE") != NULL;
    json_set_alloc_funcs(json_malloc, json_free);
}

void failalloc_arm(long n)
{
    failalloc_arm_mode(n, 0);
}

void failalloc_arm_mode(long n, int persistent)
{
    pthread_mutex_lock(&lock);
    count = injected = 0;
    fail_at = n;
    persist = persistent;
    armed = 1;
    pthread_mutex_unlock(&lock);
}

long failalloc_count(void)
{
    pthread_mutex_lock(&lock);
    long r = count;
    pthread_mutex_unlock(&lock);
    return r;
}

long failalloc_live(void)
{
    pthread_mutex_lock(&lock);
    long r = live;
    pthread_mutex_unlock(&lock);
    return r;
}

int failalloc_injected(void)
{
    pthread_mutex_lock(&lock);
    int r = injected != 0;
    pthread_mutex_unlock(&lock);
    return r;
}

failalloc_stats failalloc_disarm_report(int report)
{
    pthread_mutex_lock(&lock);
    armed = 0;
    failalloc_stats s = {count, injected, live};
    int shown = 0;
    for (size_t i = 0; i < cap; i++) {
        if (set[i].p && set[i].p != TOMB && report && shown++ < 8) {
            fprintf(stderr, "failalloc: leaked %zu bytes at %p, allocated by ", set[i].size,
                    set[i].p);
            fflush(stderr);
            backtrace_symbols_fd(&set[i].caller, 1, 2);
        }
    }
    if (cap)
        memset(set, 0, cap * sizeof *set);
    used = live = 0;
    pthread_mutex_unlock(&lock);
    return s;
}
