/* digest.c - SHA-256 through OpenSSL's EVP interface (see digest.h). */
#include "core/digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qn_sha256 {
    EVP_MD_CTX *ctx;
};

qn_sha256 *qn_sha256_new(void)
{
    qn_sha256 *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void qn_sha256_update(qn_sha256 *h, const void *data, size_t len)
{
    EVP_DigestUpdate(h->ctx, data, len);
}

static void to_hex(const unsigned char *md, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[QN_SHA256_HEX] = '\0';
}

void qn_sha256_final(qn_sha256 *h, char hex[QN_SHA256_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, md, &n);
    to_hex(md, hex);
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void qn_sha256_free(qn_sha256 *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void qn_sha256_buf(const void *data, size_t len, char hex[QN_SHA256_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    to_hex(md, hex);
}

int qn_sha256_file(const char *path, char hex[QN_SHA256_HEX + 1], qn_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return qn_err_set(err, errno == ENOENT ? QN_NOT_FOUND : QN_INTERNAL,
                          "cannot open %s: %s", path, strerror(errno));
    qn_sha256 *h = qn_sha256_new();
    int rc = 0;
    if (!h) {
        rc = qn_err_set(err, QN_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        qn_sha256_update(h, buf, n);
    if (ferror(f)) {
        rc = qn_err_set(err, QN_INTERNAL, "cannot read %s", path);
        goto out;
    }
    qn_sha256_final(h, hex);
out:
    qn_sha256_free(h);
    fclose(f);
    return rc;
}

int qn_sha256_hex_valid(const char *s, size_t len)
{
    if (len != QN_SHA256_HEX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int qn_digest_parse(const char *s, char hex[QN_SHA256_HEX + 1], qn_err *err)
{
    static const char prefix[] = "sha256:";
    if (!s || strncmp(s, prefix, sizeof prefix - 1) != 0)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "digest must start with \"sha256:\" followed by 64 lower-case hex characters");
    const char *h = s + sizeof prefix - 1;
    size_t len = strlen(h);
    if (len != QN_SHA256_HEX)
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "digest must have 64 hex characters after \"sha256:\", got %zu", len);
    if (!qn_sha256_hex_valid(h, len))
        return qn_err_set(err, QN_INVALID_ARGUMENT,
                          "digest must be lower-case hex (0-9, a-f) after \"sha256:\"");
    memcpy(hex, h, QN_SHA256_HEX + 1);
    return 0;
}
