/*
 * fsort.c - LSD radix sort of doubles on their order-preserving bit image
 * (fsort.h).
 *
 * One pass over the input builds the six 11-bit digit histograms (48 KiB of
 * counters, on the stack: the function allocates nothing). A pass whose digit
 * is the same for every key is skipped (small integers, a narrow range, a
 * constant column). The first scatter reads the doubles and computes their
 * keys on the fly, the last writes the decoded doubles, so a sort costs the
 * histogram pass plus one pass per useful digit and no separate encode or
 * decode pass. The buffers alternate so that the last scatter lands in dst.
 */
#include "ml/fsort.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define DIGIT_BITS 11
#define NBUCKETS (1u << DIGIT_BITS)
#define DIGIT_MASK (NBUCKETS - 1)
#define NPASSES 6     /* 66 bits >= 64 */
#define SMALL_N 64    /* below this, insertion sort on the keys */

#define SIGN_BIT 0x8000000000000000ull
#define NAN_KEY 0xfff8000000000000ull  /* the key of +NaN 0x7ff8...: after +inf */

static inline uint64_t key_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    if ((u & ~SIGN_BIT) > 0x7ff0000000000000ull)
        return NAN_KEY;  /* any NaN: last, canonical */
    uint64_t neg = (uint64_t)0 - (u >> 63);  /* all ones for a negative */
    return u ^ (neg | SIGN_BIT);
}

static inline double val_of(uint64_t k)
{
    uint64_t u = (k >> 63) ? k ^ SIGN_BIT : ~k;
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* Keys live in double-sized slots of dst and tmp; memcpy keeps that free of
 * aliasing trouble and compiles to plain moves. */
static inline uint64_t ld(const double *p, size_t i)
{
    uint64_t u;
    memcpy(&u, p + i, sizeof u);
    return u;
}

static inline void st(double *p, size_t i, uint64_t u)
{
    memcpy(p + i, &u, sizeof u);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* One counting-sort pass on digit `shift`. raw: in holds doubles (encode on
 * read); last: write decoded doubles. Called with constants, so each use
 * compiles to a loop without those branches. */
static inline void scatter(const double *in, size_t n, double *out, uint32_t *off, int shift,
                           int raw, int last)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t k = raw ? key_of(in[i]) : ld(in, i);
        uint32_t pos = off[(k >> shift) & DIGIT_MASK]++;
        if (last) {
            double v = val_of(k);
            memcpy(out + pos, &v, sizeof v);
        } else {
            st(out, pos, k);
        }
    }
}

void qml_fsort_into(const double *src, size_t n, double *dst, double *tmp)
{
    if (n < SMALL_N || n > UINT32_MAX) {
        /* keys into tmp, sort them there, decode into dst (src may be dst) */
        for (size_t i = 0; i < n; i++)
            st(tmp, i, key_of(src[i]));
        if (n < SMALL_N) {
            for (size_t i = 1; i < n; i++) {
                uint64_t k = ld(tmp, i);
                size_t j = i;
                while (j > 0 && ld(tmp, j - 1) > k) {
                    st(tmp, j, ld(tmp, j - 1));
                    j--;
                }
                st(tmp, j, k);
            }
        } else {
            qsort(tmp, n, sizeof(uint64_t), cmp_u64);  /* counters are 32-bit */
        }
        for (size_t i = 0; i < n; i++)
            dst[i] = val_of(ld(tmp, i));
        return;
    }
    uint32_t hist[NPASSES][NBUCKETS];
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = key_of(src[i]);
        for (int p = 0; p < NPASSES; p++)
            hist[p][(k >> (p * DIGIT_BITS)) & DIGIT_MASK]++;
    }
    int act[NPASSES], m = 0;
    uint64_t k0 = key_of(src[0]);
    for (int p = 0; p < NPASSES; p++) {
        uint32_t *h = hist[p];
        if (h[(k0 >> (p * DIGIT_BITS)) & DIGIT_MASK] == n)
            continue;  /* one digit value for all: the pass would not move anything */
        uint32_t sum = 0;
        for (size_t d = 0; d < NBUCKETS; d++) {
            uint32_t c = h[d];
            h[d] = sum;
            sum += c;
        }
        act[m++] = p;
    }
    if (m == 0) {  /* every key equal */
        for (size_t i = 0; i < n; i++)
            dst[i] = val_of(k0);
        return;
    }
    /* Pass j (0-based) writes to dst when m-1-j is even, so the last is dst.
     * In place with m odd the first pass would read and write dst: encode
     * into tmp first and read from there. */
    const double *in = src;
    int raw = 1;
    if (src == dst && (m & 1)) {
        for (size_t i = 0; i < n; i++)
            st(tmp, i, key_of(src[i]));
        in = tmp;
        raw = 0;
    }
    for (int j = 0; j < m; j++) {
        double *out = ((m - 1 - j) % 2 == 0) ? dst : tmp;
        uint32_t *off = hist[act[j]];
        int shift = act[j] * DIGIT_BITS, last = j == m - 1;
        if (raw && last)
            scatter(in, n, out, off, shift, 1, 1);
        else if (raw)
            scatter(in, n, out, off, shift, 1, 0);
        else if (last)
            scatter(in, n, out, off, shift, 0, 1);
        else
            scatter(in, n, out, off, shift, 0, 0);
        in = out;
        raw = 0;
    }
}

int qml_fsort(double *x, size_t n)
{
    if (n < SMALL_N) {
        double tmp[SMALL_N];
        qml_fsort_into(x, n, x, tmp);
        return 0;
    }
    double *tmp = malloc(n * sizeof *tmp);
    if (!tmp)
        return QN_RESOURCE_EXHAUSTED;
    qml_fsort_into(x, n, x, tmp);
    free(tmp);
    return 0;
}
