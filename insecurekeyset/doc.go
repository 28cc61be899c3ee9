// Package insecurekeyset exports lockstream category keys as Tink keysets in
// cleartext. Its name warns, like tink-go's insecurecleartextkeyset: whatever
// it returns is raw key material.
//
// It exists for one purpose: BigQuery's AEAD.DECRYPT_BYTES and
// DETERMINISTIC_DECRYPT_BYTES take a cleartext Tink keyset (binary
// google.crypto.tink.Keyset) as a BYTES value, so a restricted keys table can
// let analysts decrypt lockstream ciphertexts in SQL.
//
// # Behavior
//
// One keyset holds every given version of one (subject, category): AES-256-GCM
// keys for [AEAD] (normal fields) or AES-SIV keys for [Deterministic] (fields
// marked deterministic). Each key's Tink id is its version — the id in the
// prefix of every ciphertext fieldcrypt writes — and the highest version is
// primary. Binary and JSON serializations are Tink's own.
//
// # Guarantees
//
// A ciphertext from fieldcrypt.Cipher decrypts with plain Tink (aead.New /
// daead.New) on the handle built here from the same category key; tests prove
// it through the binary and JSON forms.
//
// # Failure modes
//
// Mixed subjects or categories, duplicate versions, or invalid keys are
// errors; errors never contain key bytes.
package insecurekeyset
