// Package server serves the key service API (proto/lockstream/keys/v1) over
// a *keyservice.Service.
//
// It is built on connect-go: one net/http handler speaks gRPC, gRPC-Web and
// the Connect protocol, so /metrics, /healthz and /readyz share the port,
// plain HTTP clients (curl) work, and tests need nothing but net/http.
// Without TLS the server also accepts cleartext HTTP/2 (h2c) for gRPC
// clients; with Serve's TLS files it serves HTTPS (HTTP/1.1 and HTTP/2).
//
// # Services file
//
// Callers are services, each authenticated by a secret sent as
// "Authorization: Bearer <secret>". The services file is JSON (see
// testdata/services.json; unknown fields are errors):
//
//	{"services": [
//	  {"name": "ingest", "secret_sha256": "<hex sha256 of the secret>",
//	   "scopes": ["events"], "categories": ["*"], "mode": "encrypt"},
//	  {"name": "analyst-view", "secret_sha256": "…", "scopes": ["events"],
//	   "categories": ["contact", "location"], "mode": "decrypt"},
//	  {"name": "ops", "secret_sha256": "…", "categories": ["*"],
//	   "mode": "none", "admin": true}]}
//
// mode encrypt allows GetOrCreateKeys and GetKeysByUser; decrypt also
// GetKeysBySubject; none no key calls. admin allows CreateKeychain,
// DeleteUser, RevokeCategory, RotateCategory and ShowKeychain (revoke and
// rotate also need the category). "*" grants every scope or category.
// "secret" (plaintext, at least 16 bytes) may replace "secret_sha256" in
// development. [HashSecret] computes the hash.
//
// # Behavior
//
// Every RPC passes, in order: metrics; load shedding (more than
// MaxConcurrent RPCs in flight are refused at once with ResourceExhausted);
// the request deadline (RequestTimeout, default 2 s, or the client's if
// shorter); authentication (Unauthenticated); authorization of mode, scope,
// categories and admin (PermissionDenied) — before anything is looked up,
// so a refusal never depends on whether a user exists; then the core call.
// The server never retries: clients (package keyclient) do, with budget and
// backoff.
//
// Audit: one JSON line (AuditRecord) per admin operation (create, delete,
// revoke, rotate) and per refused request, naming the caller, operation,
// scope, categories, id count, the keychain's subject for admin operations,
// and the outcome.
//
// Metrics (on /metrics): lockstream_keys_requests_total{method,code},
// lockstream_keys_request_duration_seconds{method},
// lockstream_keys_keys_served_total{method},
// lockstream_keys_users_total{method,status},
// lockstream_keys_errors_total{kind}, lockstream_keys_inflight_requests,
// plus Go and process metrics. /healthz answers while the process runs;
// /readyz when the store answers within a second.
//
// # Tuning the server process
//
// The warm path allocates little (memoized derived keys, pooled state) but
// the live heap is dominated by the keychain cache (keyservice
// Options.CacheSize), so with the default GOGC=100 the GC runs often and
// each concurrent mark takes a quarter of GOMAXPROCS for tens of
// milliseconds — on 2 cores the largest source of tail latency we could
// control. Give the process a memory budget rather than a fixed GOGC: set
// GOMEMLIMIT to about 70–80% of the container's memory and raise GOGC (e.g.
// GOGC=400, or GOGC=off with GOMEMLIMIT so the limit alone paces the GC),
// then watch go_gc_duration_seconds and go_memstats_heap_inuse_bytes on
// /metrics. Measured on the 2-core bench (BenchmarkBatch100, one process,
// shared machine): GOGC=400 cut GC cycles at 50% load from ~6/s to ~1/s,
// the GC's CPU share from ~8% to ~2%, and p90 from 5.7 to 1.9 ms. The
// binary does not hardcode either value: they depend on the container.
//
// The other tail was the store refresh: every cached row expires a stale
// window after it was read, and rows read together expire together, so
// every few seconds a burst of requests went to the store and re-opened
// root keys (p99 31 ms at 500 RPC/s against 3.6 ms with refreshes
// disabled). Expiry is now spread over the last fifth of the window, and a
// row read again unchanged reuses its opened keys (keyservice
// reopenKeychain). BenchmarkBatch100 runs the server as its own
// `lockstream keys serve` process and reports the share of RPCs the server
// answered within 2 and 5 ms by its own histogram (server-le5ms-%): on the
// shared 2-core machine at 50% of max load that share is above 99% while
// the generator's end-to-end p99 stays above 5 ms, because generator and
// client share the two cores with the server (with the server pinned to a
// core of its own, LOCKSTREAM_BENCH_SERVER_CPUS=0 and the bench under
// `taskset -c 1`, 100% of its answers took under 2 ms).
//
// # Guarantees
//
//   - No user id and no key byte is ever written to the audit log, the
//     server log, metrics or an error message; by-subject answers never
//     carry user ids.
//   - Secrets are compared as SHA-256 hashes in constant time against every
//     configured service.
//
// # Failure modes
//
// InvalidArgument: bad input (empty or oversized ids, unknown category, bad
// scope, batch over the limit, a malformed message), with a message that
// says what is wrong without repeating ids; the server keeps serving.
// Unauthenticated / PermissionDenied: see above. ResourceExhausted:
// overloaded, retry with backoff. DeadlineExceeded / Unavailable: the store
// was slow or down, retry with backoff. NotFound (admin show of an unknown
// user), FailedPrecondition (admin operation on a deleted user). Internal:
// anything else; the details go to the server log only.
package server
