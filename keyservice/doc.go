// Package keyservice is the key service ("Padlock"): it keeps one keychain
// per user and hands out per-scope category keys derived from it. Deleting a
// keychain (crypto-shredding) makes everything encrypted for that user
// unreadable everywhere at once.
//
// # Model
//
// A keychain belongs to one user. It holds an opaque random _subject
// ("s_" + 26 lower-case base32 characters of 16 random bytes) and one random
// 32-byte root key per (category, version). Root keys never leave the
// service. Callers (service scopes such as "ingest" or "view.analytics")
// receive derived keys ([fieldcrypt.CategoryKey]), never root keys.
//
// # Key derivation (format version 1)
//
// A derived key is HKDF-SHA256 (RFC 5869) with
//
//	ikm  = the root key of (user, category, version)
//	salt = nil
//	info = "lockstream/keyservice/v1" || LP(scope) || LP(category) || LP(decimal version)
//	L    = 32 bytes
//
// where LP(s) is the 4-byte big-endian length of s followed by the bytes of
// s; e.g. scope "ingest", category "contact", version 12:
//
//	"lockstream/keyservice/v1\x00\x00\x00\x06ingest\x00\x00\x00\x07contact\x00\x00\x00\x0212"
//
// Different scopes, categories or versions therefore never get equal keys.
// A change of any of this is a new version ("…/v2"), never an edit; tests
// pin a vector.
//
// # Storage (format version 1)
//
// A [Store] is a small key-value map with per-row revisions
// (compare-and-set). Rows:
//
//	uid_<hex HMAC-SHA256(index key, user id)>  -> the user's _subject, or a tombstone
//	sub_<_subject>                             -> sealed root keys, revocations; or a tombstone
//	pol_<category>                             -> current and minimum version
//	meta_master_check                          -> a value sealed under the master key
//
// No row holds a plaintext user id or a plaintext key. Root keys are sealed
// with AES-256-GCM under a key derived from the master key
// (HKDF-SHA256(master, nil, "lockstream/keyservice/v1/master/wrap")), AAD =
// "lockstream/keyservice/v1/root" || LP(row key) || LP(category) ||
// LP(decimal version), so a sealed root key cannot be moved to another
// user, category or version. The index key is
// HKDF-SHA256(master, nil, "lockstream/keyservice/v1/master/index").
// The master key (32 bytes, base64) comes from a file ([LoadMasterKey]) or
// an environment variable ([MasterKeyFromEnv]); it is never logged.
//
// Backends, each in its own package, all opened by URL through package
// keyservice/stores: keyservice/boltstore (embedded, the default,
// `bolt:DIR`), keyservice/bigtablestore
// (`bigtable://PROJECT/INSTANCE/TABLE`), keyservice/memstore (`memory:`),
// and the optional keyservice/memcachedstore tier in front of any of them
// (stores.WithMemcached), whose entries are authenticated under a key
// derived from the master key (HKDF info
// "lockstream/keyservice/v1/master/cache-mac"; that package documents the
// entry format).
//
// # Behavior
//
//   - GetOrCreate creates a keychain on first sight: it writes the keychain
//     row under a fresh subject, then the index row with a compare-and-set;
//     a concurrent loser deletes its unpublished row and adopts the
//     winner's. A new user is readable at once on every node (missing rows
//     are never cached).
//   - By-user gets return the current version of each requested category
//     (for encryption); by-subject gets return every version at or above the
//     category's minimum (for decryption). An empty category list means all
//     configured categories. Results are in request order; duplicate ids are
//     answered each time.
//   - Rotate bumps a category's current version in its policy row. It is
//     lazy: a keychain gets its root key for the new version on its next
//     by-user get, by compare-and-set (idempotent across nodes).
//     SetMinVersion stops serving older versions; their root keys are
//     destroyed at the keychain's next update.
//   - Revoke (opt-out) destroys a category's root keys for one user and
//     records the revocation; later gets list the category in
//     UserKeys.Revoked and never create a key for it again.
//
// # Deletion and the after-delete policy
//
// DeleteUser and DeleteSubject replace the keychain row by a tombstone
// without any root key, then the user's index row by a tombstone that holds
// nothing but its key (the HMAC of the user id). Gets by user id or by
// subject then report ErrUserDeleted. Deleting an unknown user also leaves
// a tombstone; deleting twice is a no-op.
//
// Options.AfterDelete decides what GetOrCreate does for a deleted user:
// DenyAfterDelete (default) answers ErrUserDeleted for that user — a late
// event for a shredded user is dead-lettered, never silently re-keyed;
// NewKeychainAfterDelete creates a brand-new keychain with a new _subject
// (old data stays unreadable and unlinkable).
//
// # The stale window
//
// Every cache obeys one rule: a row read from the store is served for at
// most Options.StaleWindow (default 5 s) after it was read from the store
// of record, then read again. The in-process cache of decrypted keychains
// (which also memoizes the keys derived from each keychain, at most 64 per
// keychain, dropped with its entry) and the memcached tier both key their expiry on that first read time, so
// their sum is still bounded by one window. The node that deletes or
// revokes drops its own cache entries and evicts the memcached entry at
// once; any other node stops handing out keys of a deleted user, a revoked
// category or a version below the minimum at most one stale window (plus
// clock skew, and up to 1 s of memcached's clock granularity) after the
// delete. Rotations become visible to other nodes within the same window.
//
// The embedded store (keyservice/boltstore) has one writer: its file is
// locked to one process, and every write goes through that one store value,
// which counts the writes of each group of keys (a LocalWriter). There an expired entry
// whose row's count has not moved since it was read is served for another
// window without reading the row again (the read would return the same
// bytes); a row written since, by any Service over that store, is read
// again as above. The rule is unchanged, the refresh reads of rows nobody
// wrote are gone (at 500 batch RPC/s over 10k users, a third of the
// server's garbage).
//
// # Trust model
//
// A service in mode encrypt (ingest) receives symmetric keys: AES-GCM and
// AES-SIV keys encrypt and decrypt alike. So a service that may encrypt for
// a user can also decrypt whatever was written under the same scope for
// that user, if it knows the user id (get-or-create by user id returns the
// current version; a by-subject get, which returns older versions too, needs
// mode decrypt). "Encrypt only" bounds what the service may ask for, not what
// the keys it receives can do. The options:
//
//   - a scope per producer (ingest-web, ingest-mobile, …): keys derived for
//     one scope never decrypt another's data, so a producer can read back
//     only what it wrote itself; readers are granted the scopes they need;
//   - short client TTLs (keyclient Options.TTL) and the key service's stale
//     window bound how long a producer keeps keys after a delete or a
//     revocation;
//   - the audit log names every caller and scope, and an encrypt-mode
//     service never sees subjects of users it has not been given ids of.
//
// Asymmetric (hybrid) encryption, where producers hold only public keys,
// would remove this reach, at the cost of the BigQuery AEAD functions, which
// need symmetric Tink keysets.
//
// # Guarantees
//
//   - One _subject and one root key per (user, category, version), however
//     many nodes create the user concurrently.
//   - Derived keys are deterministic for (root key, scope, category,
//     version) and differ across scopes.
//   - The store, memcached and logs never see a user id or key in the
//     clear; errors never contain user ids or key bytes (ids in invalid
//     batches are named by position).
//   - What memcached returns cannot change an answer: entries are
//     authenticated and their age bounded (see keyservice/memcachedstore).
//
// # Failure modes
//
//   - ErrInvalidArgument (permanent): bad scope ([a-z0-9._-], 1–64 bytes),
//     empty or oversized user id, malformed subject, unknown category (also
//     ErrUnknownCategory), batch over Options.MaxBatch.
//   - ErrUnavailable (transient): a store failure or an expired deadline.
//     The service never retries; clients retry with backoff and budget.
//     Heavy write contention on one row also reports ErrUnavailable.
//   - memcached down, slow or returning bad entries: reads go to the store
//     (slower, never wrong); see CacheStats and the rejected counter.
//   - ErrSealedRow (permanent): a root key does not open under the master
//     key — the wrong master key is configured (New checks this against
//     meta_master_check and refuses to start) or a row was tampered with.
//   - Shredding is logical at once and physical later: Bigtable purges
//     overwritten cells at compaction, and bbolt may keep freed pages (with
//     sealed, i.e. still master-key-encrypted, root keys) until reused or
//     compacted. Protect the master key accordingly.
package keyservice
