/*
 * failalloc.h - a fault-injecting allocator for tests (SQLite's faultsim,
 * curl's memdebug): while armed, it counts every allocation the code under
 * test makes, fails the Nth one, and keeps the set of blocks still live so a
 * test can assert that each run gave back everything it took.
 *
 * It sits under the code by the linker's --wrap (malloc, calloc, realloc,
 * free, strdup, strndup, asprintf, vasprintf, aligned_alloc, posix_memalign,
 * reallocarray): every object linked into the test executable, static
 * libraries included, calls the wrappers; shared libraries do not. Jansson's
 * allocations go through the same wrappers by json_set_alloc_funcs (see
 * failalloc_init); its readers (json_loadb, json_loads, json_load_file, also
 * wrapped) count as one allocation each, failed as jansson fails, because
 * jansson 2.14's lexer does not survive a failed allocation of its own (it
 * writes past its token buffer). Allocations of other shared libraries (OpenSSL, XGBoost,
 * libc internals) are neither counted nor failed; LSan covers their leaks.
 *
 *     failalloc_init();
 *     failalloc_arm(0);                        // count only
 *     run();
 *     failalloc_stats s = failalloc_disarm();  // s.count allocations, s.live left
 *     for (long n = 1; n <= s.count; n++) {
 *         failalloc_arm(n);                    // the nth allocation returns NULL
 *         run();
 *         assert(failalloc_disarm().live == 0);
 *     }
 *
 * Thread-safe (one lock); arming is global, not per thread.
 */
#ifndef QUERN_TESTS_FAILALLOC_H
#define QUERN_TESTS_FAILALLOC_H

typedef struct failalloc_stats {
    long count;     /* allocation calls made while armed */
    long injected;  /* how many of them were failed */
    long live;      /* blocks allocated while armed and not freed by disarm */
} failalloc_stats;

/* Routes jansson through the wrappers. Call once, before any JSON exists.
 * With QUERN_ALLOCFAIL_TRACE set, the failed allocation's stack is printed. */
void failalloc_init(void);

/* Starts counting from zero; fail_at > 0 makes that allocation (1-based)
 * fail, and only that one; 0 fails none. */
void failalloc_arm(long fail_at);
/* The same; persistent: that allocation and every later one fail (curl's
 * CURL_MEMLIMIT: the error paths run out of memory too). */
void failalloc_arm_mode(long fail_at, int persistent);

/* Stops counting and returns what happened since failalloc_arm. When live is
 * not zero and report is non-zero, prints each leaked block's size and the
 * address of its caller to stderr. Forgets the live set either way. */
failalloc_stats failalloc_disarm_report(int report);
#define failalloc_disarm() failalloc_disarm_report(1)

/* While armed: allocation calls so far and blocks live now (for code that
 * must wait until another thread has finished and freed). */
long failalloc_count(void);
long failalloc_live(void);

/* Non-zero when an allocation has been failed since failalloc_arm. */
int failalloc_injected(void);

#endif
