// Package fieldcrypt encrypts and decrypts one field value of one event with
// the key of one (user, category, version).
//
// # Keys
//
// The key service hands out one 32-byte category key per (service scope,
// user, category, version) — see package keyservice for how it is derived.
// fieldcrypt never sees root keys. From a category key it derives one key per
// algorithm with HKDF-SHA256 (RFC 5869), empty salt, and these info strings
// (format version 1; a change is a new version, never an edit):
//
//	"lockstream/fieldcrypt/v1/aes256-gcm"  -> 32 bytes, AES-256-GCM (Tink AesGcmKey)
//	"lockstream/fieldcrypt/v1/aes256-siv"  -> 64 bytes, AES-SIV     (Tink AesSivKey)
//
// Key material is held in [Secret], whose String, GoString, Format and JSON
// forms print "[redacted]": it cannot be logged by accident.
//
// # Ciphertext format
//
// Every ciphertext is in Tink's wire format with the TINK output prefix, so
// that Tink — and BigQuery's AEAD.DECRYPT_BYTES / DETERMINISTIC_DECRYPT_BYTES —
// decrypt it given the keyset exported by package insecurekeyset:
//
//	AES-256-GCM (normal fields):        0x01 | key id (4 bytes, big endian) | IV (12) | ciphertext | tag (16)
//	AES-SIV (fields marked deterministic): 0x01 | key id (4 bytes, big endian) | SIV (16) | ciphertext
//
// AES-GCM (random 96-bit IV, NIST SP 800-38D) and AES-SIV (RFC 5297, as
// Tink computes it) are this package's, over the CPU's AES-NI and
// PCLMULQDQ instructions (aes.go, aesni_amd64.s, siv.go), and over
// crypto/aes and crypto/cipher where it has none or with -tags purego.
// Tests check both against crypto/cipher and Tink byte for byte, open both
// with plain Tink from the exported keyset, and open Tink's own
// ciphertexts with [Cipher.Decrypt].
//
// The Tink key id is the category key version (1, 2, …), so every ciphertext
// says which version made it ([VersionOf]) and one exported keyset can hold
// every version of a (user, category).
//
// # Associated data
//
// AAD binds the ciphertext to its event type, field and subject:
//
//	"<event_type>.<field>|<_subject>"      e.g. "PlaybackEvent.ip_address|s_4f2a…"
//
// so a ciphertext moved to another field, another event type or another
// user's record fails to decrypt. The schema version is deliberately not in
// the AAD: a field keeps its meaning across compatible schema versions.
//
// # Plaintext encoding
//
// Callers encrypt bytes; the record layer (package record, Anonymizer and Decryptor) turns values
// into bytes: strings as their UTF-8 bytes, bytes as is, int and long as
// base-10 ASCII (so a BigQuery view can CAST the decrypted string).
//
// # Behavior
//
// A [Cipher] is a value holding the derived keys of one category key (no
// pointer, no built AES state). Deriving them (HKDF) costs about ten times
// a seal, so callers keep them: a key cache that hands out the same key
// many times derives once, as the key arrives, and passes both algorithm
// keys along with the key ([DeriveKey], [CategoryKey.WithDerived]), or the
// AES-GCM key alone for a category no deterministic field uses
// ([DeriveGCMKey]: 6 of HKDF's 11 SHA-256 blocks); otherwise a [Cache]
// keyed by the key material keeps them. The AES state
// is built per value sealed or opened, on the stack: with AES-NI an
// AES-256 key schedule costs ~20 ns and no allocation, and sealing 64
// bytes with AES-GCM ~0.3 µs with its IV (`go test -bench Encrypt64
// ./fieldcrypt`). crypto/aes and crypto/cipher can only build an AES
// state on the heap (1.3 KB per AES-GCM value, 1 KB per AES-SIV one), and
// a cache of built states for a few hundred thousand keys costs more in
// memory and garbage collection than it saves.
//
// # Guarantees
//
//   - Flipping any byte of a ciphertext, or changing any byte of the AAD,
//     makes [Cipher.Decrypt] fail with [ErrDecrypt].
//   - Deterministic ciphertexts are equal for equal (plaintext, AAD, key) and
//     differ under another key.
//
// # Failure modes
//
// Errors never contain plaintext, ciphertext or key bytes. [ErrDecrypt] is
// permanent for that ciphertext and key (tampering, wrong key, wrong AAD);
// [ErrKeySize] means the key service returned material of the wrong size.
package fieldcrypt
