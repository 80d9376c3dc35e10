/* The device's own checks, from docs/protocol.md alone: the sealed box of
 * section 6.2 opened with libsodium and again from its primitives as section
 * 14.1 describes them (nonce = BLAKE2b-24(ephemeral public key || device
 * public key), then crypto_box: X25519, HSalsa20, XSalsa20-Poly1305), the
 * merge patches of RFC 7396 Appendix A, and the keys' base64. Prints one line
 * per check; exits non-zero on the first failure. Built with ASan and UBSan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "merge_patch.h"
#include "sealed.h"

static int failures;

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok)
        failures++;
}

/* docs/protocol.md section 6.2: the example request's key pair and approved reply. */
static const char *PUBLIC_KEY = "hMtEDkO8qnmLEV1Eb6+PQTo7sdtNuF5+Wq1KfUItk0I=";
static const char *SECRET_KEY = "wysNZcNb51TYtHFV2gwUxm7oeAveYpqWIsH8GNafXMQ=";
static const char *SEALED =
    "9ZPfK8xbizQtoneu/f68fUXGcLK/l09f2pI9pf99fl8ztPHQTFeigbbLtfJ4g0s7D3MM+nwCQmdALpvqI/xul/Oj8I6dS0qWljRBKrE0h4wCK1oe3Ary8aQlrCvL/GhULMaGFjc/fHvitYdWDqaYBK2o3qBQC4CxZOsaIvqBXZtNQ5Vj5c0GuaIe7vnSbJust3Nz1cmIbG5jP/uKuCEnim5NL1P5rg+fMpnYmypulD6LMaGfjUlAFCocbydmTyelLQ5XnENhU03C04/TlgweAr54hF81zhyTK9YWuysOLGwZ9AZ7TxzYvyb5+i72Y29z2lVFUPHCwC8ss87c2pBz5VmuClmoxKUvExhreweA0NwX1Hp8Lxr8gnvAlTOELJqKNnY2xWDA6Beh++2RX5Ph8581";
static const char *CREDENTIALS =
    "{\"v\":1,\"type\":\"link_credentials\",\"request_id\":\"q4Yf0cV7mW2nT8sLx1ZbA9rKp3Eh\","
    "\"device_id\":\"dev-3fa2b81c09d4\",\"mqtt\":{\"host\":\"192.168.1.10\",\"port\":1884,"
    "\"client_id\":\"dev-3fa2b81c09d4\",\"username\":\"dev-3fa2b81c09d4\","
    "\"password\":\"Wc1y0kq2m4JbXo7UeR9tFh3sL6vN8aPd\"}}";

/* docs/protocol.md section 14.1: the intermediate values of opening it. */
static const char *NONCE_HEX = "1d0111327e0cea7942ba99df038ffefc506fa19e3142a546";
static const char *SHARED_HEX = "7f18a78dd4603e15d0a4f3b910deb84e4254dbabf6a2dae6b85b9d44a316e505";
static const char *KEY_HEX = "c941fb2c134c0331face212496fcb8019fbe3e39b924806f4286e300970d3443";

static void sealed_box(void)
{
    static char plain[4096];
    check(sealed_open(SEALED, PUBLIC_KEY, SECRET_KEY, plain, sizeof plain) && strcmp(plain, CREDENTIALS) == 0,
          "the document's sealed box opens to the document's credentials");

    /* The same from the primitives, byte by byte as section 14.1 lays the box out. */
    static unsigned char box[4096], message[4096];
    unsigned char pk[32], sk[32], nonce[crypto_box_NONCEBYTES], both[64];
    size_t box_len = 0;
    sodium_base642bin(box, sizeof box, SEALED, strlen(SEALED), NULL, &box_len, NULL, sodium_base64_VARIANT_ORIGINAL);
    b64_key_decode(PUBLIC_KEY, pk, sizeof pk);
    b64_key_decode(SECRET_KEY, sk, sizeof sk);
    memcpy(both, box, 32);        /* the ephemeral public key: the box's first 32 bytes */
    memcpy(both + 32, pk, 32);    /* then the device's public key */
    crypto_generichash(nonce, sizeof nonce, both, sizeof both, NULL, 0);  /* BLAKE2b, 24 bytes out */
    unsigned char shared[32], key[crypto_box_BEFORENMBYTES], expected[32];
    sodium_hex2bin(expected, sizeof expected, NONCE_HEX, strlen(NONCE_HEX), NULL, NULL, NULL);
    check(memcmp(nonce, expected, sizeof nonce) == 0, "the nonce: BLAKE2b-24 of ephemeral key, device key");
    sodium_hex2bin(expected, sizeof expected, SHARED_HEX, strlen(SHARED_HEX), NULL, NULL, NULL);
    check(crypto_scalarmult(shared, sk, box) == 0 && memcmp(shared, expected, 32) == 0,
          "the shared secret: X25519 of the device's private key and the ephemeral key");
    sodium_hex2bin(expected, sizeof expected, KEY_HEX, strlen(KEY_HEX), NULL, NULL, NULL);
    check(crypto_box_beforenm(key, box, sk) == 0 && memcmp(key, expected, 32) == 0,
          "the key: HSalsa20 of the shared secret (crypto_box_beforenm)");
    int opened = crypto_box_open_easy(message, box + 32, box_len - 32, nonce, box, sk);
    check(opened == 0 && box_len - 48 == strlen(CREDENTIALS)
              && memcmp(message, CREDENTIALS, strlen(CREDENTIALS)) == 0,
          "opened from its parts: 32-byte ephemeral key, 16-byte MAC, ciphertext; BLAKE2b-24 nonce");

    unsigned char derived[32];
    crypto_scalarmult_base(derived, sk);
    check(memcmp(derived, pk, 32) == 0, "the public key is X25519 of the private key");

    box[40] ^= 1;  /* one bit of the MAC */
    char altered[4096];
    sodium_bin2base64(altered, sizeof altered, box, box_len, sodium_base64_VARIANT_ORIGINAL);
    check(!sealed_open(altered, PUBLIC_KEY, SECRET_KEY, plain, sizeof plain), "an altered box does not open");
    char other_public[LH_KEY_B64], other_secret[LH_KEY_B64];
    key_pair_new(other_public, other_secret);
    check(!sealed_open(SEALED, other_public, other_secret, plain, sizeof plain), "another key does not open it");
}

static void merge_patches(void)
{
    /* RFC 7396 Appendix A: target, patch, result. */
    static const char *cases[][3] = {
        {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
        {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
        {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
        {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
        {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
        {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
        {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
        {"{\"a\":\"foo\"}", "null", "null"},
        {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
        {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
        {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
        {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *target = cJSON_Parse(cases[i][0]);
        cJSON *patch = cJSON_Parse(cases[i][1]);
        cJSON *expected = cJSON_Parse(cases[i][2]);
        cJSON *result = merge_patch(target, patch);
        char what[160];
        snprintf(what, sizeof what, "RFC 7396 A.%zu: %s + %s", i + 1, cases[i][0], cases[i][1]);
        check(cJSON_Compare(result, expected, 1), what);
        cJSON_Delete(result);
        cJSON_Delete(patch);
        cJSON_Delete(expected);
    }
}

static void identifiers(void)
{
    unsigned char key[32];
    check(b64_key_decode(PUBLIC_KEY, key, sizeof key), "a key in standard padded base64 decodes");
    check(!b64_key_decode("hMtEDkO8qnmLEV1Eb6-PQTo7sdtNuF5-Wq1KfUItk0I=", key, sizeof key),
          "the base64url alphabet is refused for keys");
    check(!b64_key_decode("hMtEDkO8qnmLEV1Eb6+PQTo7sdtNuF5+Wq1KfUItk0I", key, sizeof key),
          "a key without its padding is refused");
    char token[64], client_id[32];
    random_token(token, sizeof token, 24);
    random_client_id(client_id, sizeof client_id);
    check(strlen(token) == 32 && strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == 32,
          "a request id or reply token: 24 random bytes, 32 base64url characters");
    check(strlen(client_id) == 20 && strncmp(client_id, "lh-boot-", 8) == 0,
          "a bootstrap client id fits MQTT 3.1.1's 23 characters");
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    sealed_box();
    merge_patches();
    identifiers();
    printf("%s: %d failed\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
