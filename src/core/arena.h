/*
 * arena.h - bump allocator for per-request memory, freed in one call.
 *
 *     qn_arena *a = qn_arena_new(4096);
 *     char *s = qn_arena_printf(a, "model %s v%d", name, v);
 *     int *xs = qn_arena_alloc(a, n * sizeof *xs);
 *     qn_arena_free(a);          // everything above is gone
 *
 * Allocations are 16-byte aligned. Large requests get their own block.
 * An arena is used by one thread at a time.
 */
#ifndef QN_ARENA_H
#define QN_ARENA_H

#include <stddef.h>

typedef struct qn_arena qn_arena;

/* block: the size of each chunk (0 picks a default). NULL when out of memory. */
qn_arena *qn_arena_new(size_t block);
/* Frees every allocation and the arena itself. NULL is fine. */
void qn_arena_free(qn_arena *a);
/* Frees every allocation but keeps the first block for reuse. */
void qn_arena_reset(qn_arena *a);

/* NULL when out of memory. The memory is uninitialised (calloc: zeroed). */
void *qn_arena_alloc(qn_arena *a, size_t n);
void *qn_arena_calloc(qn_arena *a, size_t n, size_t size);
char *qn_arena_strdup(qn_arena *a, const char *s);
char *qn_arena_strndup(qn_arena *a, const char *s, size_t n);
char *qn_arena_printf(qn_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
