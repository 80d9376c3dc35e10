#include "sealed.h"

#include <stdio.h>
#include <string.h>

#include "device.h"

/* The largest sealed box the protocol sends: 16384 base64 characters. */
#define BOX_MAX 12288

bool sealed_init(void)
{
    return sodium_init() >= 0;
}

void random_token(char *out, size_t out_size, size_t bytes)
{
    unsigned char raw[64];
    if (bytes > sizeof raw)
        bytes = sizeof raw;
    randombytes_buf(raw, bytes);
    sodium_bin2base64(out, out_size, raw, bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

void random_client_id(char *out, size_t out_size)
{
    unsigned char raw[LH_CLIENT_ID_HEX / 2];
    char hex[LH_CLIENT_ID_HEX + 1];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    snprintf(out, out_size, "lh-boot-%s", hex);
}

bool key_pair_new(char public_b64[LH_KEY_B64], char secret_b64[LH_KEY_B64])
{
    unsigned char pk[crypto_box_PUBLICKEYBYTES];
    unsigned char sk[crypto_box_SECRETKEYBYTES];
    if (crypto_box_keypair(pk, sk) != 0)
        return false;
    sodium_bin2base64(public_b64, LH_KEY_B64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(secret_b64, LH_KEY_B64, sk, sizeof sk, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(sk, sizeof sk);
    return true;
}

bool b64_key_decode(const char *text, unsigned char *out, size_t size)
{
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, size, text, strlen(text), NULL, &len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return false;
    return len == size && end != NULL && *end == '\0';
}

bool sealed_open(const char *box_b64, const char *public_b64, const char *secret_b64,
                 char *plain, size_t plain_size)
{
    static unsigned char box[BOX_MAX];
    unsigned char pk[crypto_box_PUBLICKEYBYTES];
    unsigned char sk[crypto_box_SECRETKEYBYTES];
    size_t box_len = 0;
    const char *end = NULL;
    bool opened = false;

    if (sodium_base642bin(box, sizeof box, box_b64, strlen(box_b64), NULL, &box_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 || end == NULL || *end != '\0')
        return false;
    if (box_len < crypto_box_SEALBYTES || box_len - crypto_box_SEALBYTES >= plain_size)
        return false;
    if (b64_key_decode(public_b64, pk, sizeof pk) && b64_key_decode(secret_b64, sk, sizeof sk)
        && crypto_box_seal_open((unsigned char *)plain, box, box_len, pk, sk) == 0) {
        plain[box_len - crypto_box_SEALBYTES] = '\0';
        opened = true;
    }
    sodium_memzero(sk, sizeof sk);
    return opened;
}
