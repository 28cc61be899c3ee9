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
// lockstream_keys_get_or_create_duration_seconds{path} (path existing: every
// keychain found; create: the call wrote keychains, i.e. waited for durable
// store writes), lockstream_keys_keys_served_total{method},
// lockstream_keys_users_total{method,status},
// lockstream_keys_errors_total{kind}, lockstream_keys_inflight_requests,
// lockstream_keys_cache_requests_total{tier,result},
// lockstream_keys_cache_rejected_total{reason} (memcached entries that
// failed authentication or their age check; see package keyservice),
// lockstream_keys_build_info{version,go_version} (Config.BuildVersion: the
// versions serving during a rollout), plus Go and process metrics.
// /healthz answers while the process runs; /readyz when the store answers
// within a second (clients use it to pick a deployment group); both carry
// the build version in the X-Lockstream-Version header.
//
// # Tuning the server process
//
// Tail latency on a small machine comes from the garbage collector and from
// the OS scheduler more than from the work itself, so the server is built
// to give the GC little to do:
//
//   - the keychain cache holds opened keychains in a pointer-free form
//     (keyservice: raw row bytes, root keys in a flat array): a 10k-user
//     cache went from ~135 MB of maps to mark to ~35 MB, mostly not scanned;
//   - the cache's reads take only a read lock of one of 64 map shards
//     (keyservice lru, CLOCK eviction), so a reader preempted by the OS
//     blocks no other reader;
//   - a key RPC's answer (the service's keys, then their protobuf messages)
//     is built in buffers reused once the response is written (recycle.go),
//     and a batch request's ids are cut from one copy of the request
//     (codec.go): ~45 KB less garbage per batch of 100, and ~100 fewer
//     objects. That copy (~3.6 KB per batch of 100) is left to the GC: a
//     pooled arena for the user ids was tried and removed, since an A/B
//     with the load benchmark at full load (three alternating runs each)
//     showed no gain beyond the noise (4079-4387 RPC/s and 11.8-13.2 GC
//     cycles/s with it, 3947-5278 and 11.3-15.7 without) for the cost of
//     strings over recycled memory and a test to prove no id was kept;
//   - cached rows expire spread over the last fifth of the stale window, and
//     a row read again unchanged reuses its opened keys, so refreshes do
//     not come in bursts (they did: p99 31 ms at 500 RPC/s).
//
// The live heap is dominated by the keychain cache (keyservice
// Options.CacheSize). `keys serve --gc-percent` defaults to 400 (a heap up
// to 5x the live one); `--gc-percent off --memory-limit 2GiB` paces the GC
// by a memory budget instead (as GOGC=off GOMEMLIMIT=2GiB), for a
// container of known size. Watch go_gc_duration_seconds and
// go_memstats_heap_inuse_bytes on /metrics, and go_gc_scan_total_bytes,
// the memory one cycle must scan. `keys serve --debug-listen
// 127.0.0.1:PORT` serves Go's profiler (CPU, heap, allocations, execution
// trace) for this kind of work.
//
// BENCHMARKS.md ("Key server") has how these were measured: the load
// benchmark's method, the runs, and what the GC and the OS scheduler do
// to the p99 at 50% load.
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
