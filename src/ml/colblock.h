/*
 * colblock.h - canonical JSON rows in columnar form: how quern-ingest stores
 * a dataset's rows and how quern-prep receives them.
 *
 * A column block holds up to QML_COLBLOCK_MAX_ROWS consecutive rows of one
 * dataset. Each column keeps its distinct values once (a dictionary of the
 * values' canonical JSON texts, exactly as they appear in the rows) and one
 * small integer per row pointing into it, so a row's key is written once per
 * block and a repeated value (a country, an invoice, a date, a price) once
 * per block. A row comes back byte for byte: the block is a lossless
 * re-arrangement of the canonical texts (records.h), never a re-typing.
 *
 *     qml_colblock_builder *b = qml_colblock_builder_new();
 *     for each canonical row text t:
 *         if (qml_colblock_add(b, t, len, &err) < 0) -> err (QN_INTERNAL: not canonical)
 *     qn_buf out;  qn_buf_init(&out, 0);
 *     if (qml_colblock_finish(b, &out, &err) < 0) ...   // appends one block; b is empty again
 *
 *     qml_colblock blk;
 *     size_t used;
 *     if (qml_colblock_view(out.data, out.len, &blk, &used, &err) < 0) -> the bytes are not a block
 *     for (uint32_t r = 0; r < blk.nrows; r++)
 *         qml_colblock_render(&blk, r, &text);              // the row's canonical text again
 *     qml_colblock_view_free(&blk);
 *
 * The format (all integers little-endian; a block is self-delimiting, so
 * blocks are simply concatenated in a page):
 *
 *     "QCB1"                        magic and version
 *     u32 nrows, u32 ncols
 *     ncols times, columns in the byte order of their names (strcmp: the
 *     order keys have in a canonical row):
 *         u32 keylen, key           the key's JSON string token, quotes included
 *         u32 nvalues
 *         u32 off[nvalues + 1]      off[0] = 0, non-decreasing
 *         values                    off[nvalues] bytes: value v is bytes off[v]..off[v+1],
 *                                   its canonical JSON text ("abc", 2.55, null, true,
 *                                   {"a":1}...), never empty
 *         u8 width                  1, 2 or 4
 *         cells                     nrows x width bytes: 0 when the row lacks the key,
 *                                   else 1 + the value's index
 *
 * The view checks every length, offset and cell against the bytes it was
 * given (a block from the network is outside input); it does not parse the
 * values, which a reader takes as JSON texts that may still be bad.
 *
 * Thread safety: a builder is used by one thread; a view is read-only and may
 * be shared once made.
 */
#ifndef QML_COLBLOCK_H
#define QML_COLBLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"

#define QML_COLBLOCK_MAGIC "QCB1"
/* Rows in one block (ingest splits a larger batch into several). */
#define QML_COLBLOCK_MAX_ROWS 65536u
/* The columns one block may have (records.h allows 256 per row; a block
 * gathers the keys of all its rows). */
#define QML_COLBLOCK_MAX_COLS 4096u
/* Cells (rows x columns) one block may hold: rows that each use a few of
 * thousands of keys would otherwise make a sparse block far larger than
 * their text. */
#define QML_COLBLOCK_MAX_CELLS (1u << 22)
/* Media type of a page of concatenated blocks (ingest's export route). */
#define QML_COLBLOCK_MEDIA_TYPE "application/vnd.quern.colblocks"

typedef struct qml_colblock_builder qml_colblock_builder;

qml_colblock_builder *qml_colblock_builder_new(void);
void qml_colblock_builder_free(qml_colblock_builder *b);
/* Adds one canonical row (a compact JSON object with sorted keys, as
 * records.h writes it). 0; QN_INTERNAL when the text is not one (it names
 * the byte); QN_OUT_OF_RANGE when the block already has
 * QML_COLBLOCK_MAX_ROWS rows, or the row would give it more than
 * QML_COLBLOCK_MAX_COLS columns or QML_COLBLOCK_MAX_CELLS cells (finish the
 * block and add the row to the next: a first row always fits);
 * QN_RESOURCE_EXHAUSTED. A failed add leaves the block as it was. */
int qml_colblock_add(qml_colblock_builder *b, const char *row, size_t len, qn_err *err);
size_t qml_colblock_rows(const qml_colblock_builder *b);
/* Appends the block of the rows added since the last finish to out and
 * empties the builder. A builder with no rows appends nothing. 0 or
 * QN_RESOURCE_EXHAUSTED (out unchanged in length, builder unchanged). */
int qml_colblock_finish(qml_colblock_builder *b, qn_buf *out, qn_err *err);

typedef struct qml_colblock_col {
    const char *key;             /* the JSON string token, quotes included */
    size_t keylen;
    uint32_t nvalues;
    const unsigned char *off;    /* nvalues + 1 u32 */
    const char *values;
    unsigned width;              /* 1, 2, 4 */
    const unsigned char *cells;  /* nrows x width */
} qml_colblock_col;

/* A checked view of one block in borrowed bytes (they must outlive it). */
typedef struct qml_colblock {
    uint32_t nrows, ncols;
    qml_colblock_col *cols;      /* ncols, owned by the view */
} qml_colblock;

/* Reads the block at the start of data (len bytes) and sets *used to its
 * size. 0; QN_INVALID_ARGUMENT naming what is wrong (bad magic, a length
 * past the end, offsets out of order or an empty value, a cell past the
 * dictionary); QN_RESOURCE_EXHAUSTED. Column order is not checked: a reader
 * that maps keys to columns must not assume it. */
int qml_colblock_view(const void *data, size_t len, qml_colblock *out, size_t *used, qn_err *err);
void qml_colblock_view_free(qml_colblock *v);

static inline uint32_t qml_colblock_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Row r's cell in column c: 0 (no key) or 1 + a value index. */
static inline uint32_t qml_colblock_cell(const qml_colblock_col *c, uint32_t r)
{
    const unsigned char *p = c->cells + (size_t)r * c->width;
    if (c->width == 1)
        return p[0];
    if (c->width == 2)
        return (uint32_t)p[0] | (uint32_t)p[1] << 8;
    return qml_colblock_u32(p);
}

/* Value v's JSON text (not NUL-terminated) and its length. */
static inline const char *qml_colblock_value(const qml_colblock_col *c, uint32_t v, size_t *len)
{
    uint32_t a = qml_colblock_u32(c->off + (size_t)v * 4);
    *len = qml_colblock_u32(c->off + (size_t)v * 4 + 4) - a;
    return c->values + a;
}

/* Appends row r's canonical text (no newline). 0 or QN_RESOURCE_EXHAUSTED. */
int qml_colblock_render(const qml_colblock *v, uint32_t r, qn_buf *out);
/* Appends a block of rows [from, to) of v (to <= nrows, from < to): the same
 * columns and dictionaries, the cells of those rows. 0 or
 * QN_RESOURCE_EXHAUSTED. */
int qml_colblock_slice(const qml_colblock *v, uint32_t from, uint32_t to, qn_buf *out);

#endif
