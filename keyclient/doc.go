// Package keyclient is how pipelines get keys from the key service
// (package keyservice): a small consumer-side interface, [Keys], and a
// [Client] that puts caching, batching, singleflight, deadlines and retries
// in front of any [Transport].
//
// Transports:
//   - [RemoteTransport]: the key service API over HTTP (connect-go client,
//     Connect protocol, binary protobuf), "Authorization: Bearer <secret>".
//   - [MultiTransport]: several endpoints, each its own failure domain (in
//     production a deployment group behind its own load balancer): health
//     checks, failover, hedging (see below).
//   - keyclient/local: in process over a *keyservice.Service on a bolt
//     directory ("local:DIR"); a separate package so that pipelines talking
//     to a remote service do not link the service and its stores.
//   - [Fake]: in memory, with fault hooks (errors, latency) and call
//     counters, for pipeline tests; it is also a [Keys] by itself.
//
// [Open] picks one from a URL: "http(s)://host:port", a comma-separated
// list of them ("https://keys-a:7400,https://keys-b:7400": a
// MultiTransport), or "local:DIR". A URL that does not parse or names an
// unknown scheme fails there with [ErrConfig] ([ParseEndpoints] checks one
// without opening it). [CheckAccess] asks every endpoint whether a secret
// may get the keys it will need, creating nothing: a launcher calls it
// before reading input. [Admin] is the administrative client (delete,
// revoke, rotate, show).
//
// # Behavior
//
//   - Cache: one entry per user or subject (cache.Blobs: CLOCK, an
//     approximation of LRU) holding each category's key and its derived
//     AES-GCM and AES-SIV keys (derived once, as the key arrives; the
//     AES-SIV key only for Options.Deterministic's categories when set), each
//     with a TTL (default 1 min), and a negative cache of deleted users and
//     unknown subjects (default 10 s). Entries are bytes in arenas with no
//     pointer per entry, which the garbage collector never scans; an
//     answer copies out the key bytes it hands over.
//   - Batching: lookups that miss the cache join a pending batch per
//     (operation, category set), sent when it reaches MaxBatch ids (default
//     1000) or after BatchWindow (default 1 ms). Concurrent single lookups
//     from many goroutines become one RPC. A lookup of BatchAlone ids or
//     more (default 64: a batch of events) does not wait out the window:
//     its batches go at once, with what others had pending in them.
//     [Client.ForEncryptSets] asks a batch's sets of users (each for its
//     own categories, a dead letter's owner for its payload key) in one
//     lookup.
//   - Singleflight: a user (or subject) already pending or in flight is not
//     asked for again; its callers share the one answer.
//   - Several endpoints (MultiTransport): a call goes to the first healthy
//     endpoint in the order given; each endpoint's /readyz is probed every
//     second. A connection error, timeout, Unavailable or ResourceExhausted
//     takes the endpoint out of preference (for at least 2 s, until a probe
//     passes) and sends the call on to the next endpoint within the same
//     attempt. A call slower than the learned p95 of recent calls is hedged
//     to the next healthy endpoint (first answer wins), at most 5% of calls
//     over time (a token bucket). A refusal is never failed over or
//     hedged. [Client.EndpointStats] says how many calls went where.
//   - Deadlines and retries: each RPC has AttemptTimeout (default 2 s);
//     transient failures (unavailable, overloaded, deadline) are retried up
//     to MaxAttempts with jittered exponential backoff, paid from a retry
//     budget (token bucket: burst 10, refilled by 0.1 per success), so an
//     outage does not multiply the load. Each caller's own context is
//     honoured while it waits.
//
// # Guarantees
//
//   - Answers are in request order, one per id; ForEncrypt answers carry the
//     requested user id, ForDecrypt answers never carry one.
//   - [Client.ForEncryptInto] and [Client.ForDecryptInto] answer into room
//     the caller keeps ([Answers]) and reuses from call to call: a warm
//     call allocates nothing per id (ForEncryptInto makes one string of
//     its users' subjects). What a call returns is valid until the
//     next call with the same Answers (record's anonymizer and decryptor
//     are done with a batch's keys when they return).
//   - A key served from the cache is at most TTL old: a delete, revoke or
//     rotation reaches a running client within TTL (plus the service's own
//     stale window). [Client.Forget] drops one user or subject at once.
//   - Errors and logs never contain key bytes or user ids; keys are
//     fieldcrypt.Secret, which prints redacted.
//
// # Failure modes
//
// Whole calls fail with [ErrUnavailable] (transient: hold the work and
// retry later; also matches context.DeadlineExceeded when a deadline caused
// it) or with a permanent [ErrUnauthenticated], [ErrPermissionDenied],
// [ErrInvalidArgument], [ErrConfig] (an address that does not parse, an
// unknown scheme, an untrusted certificate, https to a plain-HTTP server)
// or [ErrInternal] (fix the configuration; retrying does not help).
// [IsTransient] tells them apart: only a failure to reach the service
// (refused or reset connections, timeouts, DNS) is transient.
// Per-user outcomes are in UserKeys.Err: [ErrUserDeleted] (drop the event),
// [ErrUnknownSubject], [ErrUnknownUser] — all permanent.
package keyclient
