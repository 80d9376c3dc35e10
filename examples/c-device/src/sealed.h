/* Keys, random identifiers and the sealed box (docs/protocol.md sections 5.2,
 * 6.2 and 14.1), with libsodium. Two base64 alphabets meet here: identifiers
 * (request id, reply token) are base64url without padding; keys and the
 * sealed box are standard base64 with padding. */
#ifndef LH_SEALED_H
#define LH_SEALED_H

#include <stdbool.h>
#include <stddef.h>
#include <sodium.h>

#define LH_KEY_BYTES crypto_box_PUBLICKEYBYTES      /* 32 */
#define LH_KEY_B64 (sodium_base64_ENCODED_LEN(LH_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL))  /* 45, with NUL */

/* sodium_init(); false if libsodium cannot run (no random source). */
bool sealed_init(void);

/* `bytes` random bytes from the system's secure source as base64url without
 * padding, into `out` (at least 4 * bytes / 3 + 2 characters). */
void random_token(char *out, size_t out_size, size_t bytes);
/* "lh-boot-" and LH_CLIENT_ID_HEX random hex digits. */
void random_client_id(char *out, size_t out_size);

/* A new X25519 key pair, each half as standard padded base64 (44 characters). */
bool key_pair_new(char public_b64[LH_KEY_B64], char secret_b64[LH_KEY_B64]);

/* Decode standard padded base64 of exactly `size` bytes; false otherwise. */
bool b64_key_decode(const char *text, unsigned char *out, size_t size);

/* Open a sealed box given as standard base64 with the pair (standard base64),
 * into `plain` (NUL-terminated). False when it does not decode, is too large
 * for `plain_size`, or does not open (wrong key, altered): use nothing then. */
bool sealed_open(const char *box_b64, const char *public_b64, const char *secret_b64,
                 char *plain, size_t plain_size);

#endif
