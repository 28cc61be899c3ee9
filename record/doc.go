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
// users of all valid messages are looked up in ONE key-service call (a
// keyclient.Client answers each user with the categories of its own
// events only, and fetches every category of the batch); then
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
// Rejected messages become a [Rejection] (see "Dead-letter record" below).
// A message of a deleted user is rejected as user_deleted and nothing of it
// but the contract attributes is kept.
//
// [Decryptor.Decrypt] is the inverse for a batch of records: one key lookup
// by _subject; each ciphertext names its key version (Tink key id).
// [Decryptor.AppendJSONLines] writes the same records as NDJSON (the bytes
// [Plain.AppendJSON] makes) without building a Plain per record.
//
// # Dead-letter record
//
// One JSON object per rejected message (NDJSON in the dead-letter area):
//
//	reason, path, rule     why it was rejected (never a value of the payload)
//	message_id             the message's id
//	publish_time           RFC 3339, UTC
//	attributes             only event_type and schema_version, in clear
//	subject                _subject of the keychain that sealed what follows
//	payload_ciphertext     the payload bytes, sealed; payload_aad its AAD:
//	                       "_deadletter.<message id>|<subject>"
//	attributes_ciphertext  the JSON object of every other attribute (keys
//	                       sorted), sealed under the same key; attributes_aad
//	                       its AAD: "_deadletter_attributes.<message id>|<subject>"
//	attributes_dropped     how many other attributes nothing could seal
//
// Ciphertexts are the Tink format of package fieldcrypt (AES-GCM), under the
// current key of category [PayloadCategory] of one keychain: the user's,
// when the payload is a JSON object with a string "user_id" member, else the
// synthetic keychain [DeadLetterUser](scope, UTC day of the publish time) of
// the root the dead letter is written to ([Options.DeadLetterScope]). An
// oversized payload is dropped unread; its other attributes are sealed under
// that dead-letter keychain. The two AAD prefixes differ before their first
// ".", so no message id turns one AAD into the other.
//
// Nothing sealed is ever kept in clear instead: when no key can seal (user
// deleted, "payload" revoked, key service unavailable: [KeyUnavailable]),
// the payload is dropped and so are the other attributes, names included
// (producers choose names, and a name can be personal); only their count
// remains. Records written before attributes_ciphertext existed copied every
// attribute into "attributes".
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
