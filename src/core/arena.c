/*
 * arena.c - the bump allocator behind per-request memory (see arena.h).
 *
 * An arena is a chain of blocks. Small allocations bump a pointer in the
 * current block; when it is full a new block of the arena's block size
 * becomes current. A request larger than a quarter of the block size gets a
 * block of its own, linked in behind the current one so the space left in the
 * current block is not wasted. Reset keeps the very first block, so a
 * long-lived arena that is reset per request stops calling malloc once warm.
 */
#include "core/arena.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 16
#define ARENA_DEFAULT_BLOCK 8192

typedef struct blk {
    struct blk *next;
    size_t cap;   /* usable bytes after the header */
    size_t used;
} blk;

/* The header is padded so that the data after it keeps the 16-byte alignment
 * of the allocation itself. */
#define BLK_HDR ((sizeof(blk) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))

struct qn_arena {
    blk *cur;     /* the block being bumped; head of the chain */
    blk *first;   /* the oldest block, kept by reset (last in the chain) */
    size_t block; /* size of an ordinary block's data */
};

static size_t align_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static blk *blk_new(size_t cap)
{
    if (cap > SIZE_MAX - BLK_HDR - ARENA_ALIGN)
        return NULL;
    size_t total = align_up(BLK_HDR + cap);
    /* malloc already aligns to max_align_t (16 on the usual 64-bit ABIs) and
     * is several times cheaper than aligned_alloc, which every HTTP request
     * pays once for its arena. */
    blk *b = ARENA_ALIGN <= _Alignof(max_align_t) ? malloc(total)
                                                  : aligned_alloc(ARENA_ALIGN, total);
    if (!b)
        return NULL;
    b->next = NULL;
    b->cap = total - BLK_HDR;
    b->used = 0;
    return b;
}

static unsigned char *blk_data(blk *b)
{
    return (unsigned char *)b + BLK_HDR;
}

qn_arena *qn_arena_new(size_t block)
{
    qn_arena *a = malloc(sizeof *a);
    if (!a)
        return NULL;
    a->block = block ? align_up(block) : ARENA_DEFAULT_BLOCK;
    a->first = a->cur = blk_new(a->block);
    if (!a->cur) {
        free(a);
        return NULL;
    }
    return a;
}

void qn_arena_free(qn_arena *a)
{
    if (!a)
        return;
    blk *b = a->cur;
    while (b) {
        blk *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void qn_arena_reset(qn_arena *a)
{
    if (!a)
        return;
    /* Large blocks may sit anywhere in the chain (even after the first), so
     * walk all of it. */
    blk *b = a->cur;
    while (b) {
        blk *next = b->next;
        if (b != a->first)
            free(b);
        b = next;
    }
    a->first->used = 0;
    a->first->next = NULL;
    a->cur = a->first;
}

void *qn_arena_alloc(qn_arena *a, size_t n)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - ARENA_ALIGN)
        return NULL;
    n = align_up(n);
    if (a->cur->cap - a->cur->used >= n) {
        void *p = blk_data(a->cur) + a->cur->used;
        a->cur->used += n;
        return p;
    }
    if (n > a->block / 4) {
        /* A block of its own, behind the current one, which stays current. */
        blk *b = blk_new(n);
        if (!b)
            return NULL;
        b->used = n;
        b->next = a->cur->next;
        a->cur->next = b;
        return blk_data(b);
    }
    blk *b = blk_new(a->block);
    if (!b)
        return NULL;
    b->next = a->cur;
    a->cur = b;
    b->used = n;
    return blk_data(b);
}

void *qn_arena_calloc(qn_arena *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = qn_arena_alloc(a, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

char *qn_arena_strndup(qn_arena *a, const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = qn_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *qn_arena_strdup(qn_arena *a, const char *s)
{
    return qn_arena_strndup(a, s, SIZE_MAX);
}

char *qn_arena_printf(qn_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = NULL;
    if (n >= 0 && (p = qn_arena_alloc(a, (size_t)n + 1)))
        vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}
