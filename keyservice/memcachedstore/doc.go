// Package memcachedstore is a read-through cache tier on memcached in front
// of any [keyservice.Store] (package keyservice/stores adds it with
// WithMemcached; `keys serve --memcached`). It saves store reads when
// several key servers share one store; it never decides what a node serves.
//
// The tier caches rows as stored — index rows (HMAC keys, subjects,
// tombstones), keychain rows (root keys sealed under the master key) and
// policies — so memcached never sees a plaintext user id or key.
//
// # Behavior
//
//   - Only found rows are cached; a missing row ("unknown user") is never
//     cached, so a user created on any node is readable at once everywhere.
//   - Every write (Put, Delete) goes to the inner store first, then deletes
//     the memcached entry (whatever the outcome), so the writing node never
//     serves its own stale row.
//   - Each entry carries the time it was read from the inner store and
//     expires (memcached TTL, rounded up to whole seconds, and an age check
//     on read) one stale window after it. Another node therefore serves a
//     deleted or revoked keychain for at most the stale window after the
//     delete (plus clock skew between nodes, and up to 1 s of memcached's
//     clock granularity), however the delete raced with its reads. An
//     entry merely past the window is a plain miss.
//   - SetNamespace separates deployments that share a memcached but not a
//     store: an entry of one namespace is rejected by the others.
//
// # Entries (format 2)
//
// An entry lives under the key "lockstream/ks2/" + namespace + "/" + row
// key (if that is over 240 bytes or the row key has other than printable
// ASCII: "lockstream/ks2/h" + hex SHA-256 of it) and is
//
//	0x02 | revision (8 bytes) | read time (8, Unix ns) | MAC (32) | value
//
// with MAC = HMAC-SHA256(K, "lockstream/keyservice/cache/v2" ||
// LP(namespace) || LP(row key) || revision || read time || value), where
// LP(s) is the 4-byte big-endian length of s followed by s, all integers
// are big-endian, and K = HKDF-SHA256(master, nil,
// "lockstream/keyservice/v1/master/cache-mac"). A change of any of this is
// a new format and a new key prefix, never an edit.
//
// An entry is used only if its MAC verifies and it was read from the store
// less than the stale window ago. One that fails is rejected, counted by
// reason ([Store.Rejected], keyservice.RejectReasons;
// lockstream_keys_cache_rejected_total{reason}) and read through to the
// store:
//
//   - malformed: too short or another format (format 1, unauthenticated,
//     lived under "ks1" and is never read);
//   - mac: corrupt bytes, an entry forged without the master key, or a
//     genuine entry of another row or namespace (a swapped index row would
//     otherwise map a user to another keychain, a swapped tombstone mark a
//     live user deleted);
//   - replayed: authentic but older than memcached could have kept it (its
//     TTL plus 2 s), so an old entry served again cannot outlive the stale
//     window;
//   - future: authentic but read more than a stale window ahead of this
//     node's clock.
//
// # Guarantees
//
//   - What memcached returns cannot change an answer: every entry used is
//     authentic, belongs to the row and namespace asked for, and is younger
//     than the stale window.
//   - No tier serves a row longer than one stale window after it was read
//     from the inner store (entries keep the inner store's read time).
//
// # Failure modes
//
//   - memcached down, slow (200 ms timeout) or returning bad entries: reads
//     go to the inner store (slower, never wrong); Stats counts the errors
//     and Rejected the bad entries. A memcached failure is never an error.
//   - Errors of the inner store are returned as they are.
//   - New fails without an inner store or an address, and with
//     keyservice.ErrInvalidArgument on a master key that is not
//     keyservice.MasterKeySize bytes.
package memcachedstore
