// Package record is the per-event core of lockstream: it turns input
// messages into encrypted Avro records (and dead-letter rejections), writes
// and reads them in Avro object container files, and decrypts them again for
// authorized views.
//
// # Behavior
//
// [Anonymizer.Anonymize] takes a batch of [Message]s: each is size-checked
// (default 1 MiB), routed by its event_type and schema_version attributes to
// a schema of the registry, decoded and validated (package schemas). The
// users of all valid messages are looked up in ONE key-service call; then
// each PII field is sealed (package fieldcrypt) with the user's current key
// of the field's category and AAD "<type>.<field>|<_subject>", the subject
// field is replaced by _subject, and the record is encoded in the type's
// encrypted schema: metadata columns _subject, _key_version (the highest
// category key version used), _publish_time and _hour (UTC hour of the
// publish time).
//
// Plaintext of a PII value before sealing: strings as UTF-8, bytes as is,
// int/long as base-10 ASCII. A null PII value stays null. A revoked category
// (opt-out) is written as null.
//
// Rejected messages become a [Rejection]: reason code, field path and rule,
// message id, publish time and attributes, and the payload sealed under the
// user's "payload" key (category [PayloadCategory]; AAD
// "_deadletter.<message id>|<_subject>"), or, when no user id can be read
// from it, under a per-UTC-day dead-letter keychain. A message of a deleted
// user is rejected as user_deleted and its payload is dropped.
//
// [Decryptor.Decrypt] is the inverse for a batch of records: one key lookup
// by _subject; each ciphertext names its key version (Tink key id).
//
// # Guarantees
//
//   - No plaintext PII in a record, a rejection, or an error text.
//   - Every record is standard Avro of its encrypted schema (tests decode
//     each with goavro); OCF files written here are read by goavro and vice
//     versa; the same records written to the same file name give identical
//     bytes (deterministic sync marker), so immutable datasets can be
//     verified by checksum.
//   - Decrypting never outputs garbage: a ciphertext that fails (tampered,
//     moved to another field or subject) is null and listed in
//     [Plain.Corrupt]; a missing key is null and listed in [Plain.Shredded].
//
// # Failure modes
//
// An error from Anonymize means the key service failed for the whole batch
// (transient): nothing may be written; retry, or dead-letter the batch with
// [KeyUnavailable]. Anonymizer and Decryptor reuse buffers: one goroutine
// each.
package record
