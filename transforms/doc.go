// Package transforms holds lockstream's Beam Go transforms: the parts the
// pipelines (package pipelines) are built from. Every transform validates
// its configuration when it is built, not when the first element arrives.
//
// # Ingest
//
// ReadReplay and ReadPubSub emit batches of messages (one element = up to
// BatchSize messages), so the anonymize stage makes one key-service lookup
// per batch without emitting from FinishBundle (whose emits land in the
// global window at time zero). ReadPubSub is an unbounded splittable DoFn
// over the Pub/Sub v2 client (synchronous Pull; a manual watermark from
// publish times; IdleTimeout ends it like a drain). AnonymizeAndWrite is
// fused with the source (no shuffle per event): it anonymizes a batch
// (package record), writes raw/late part files and dead-letter files
// through package blob, and only then acknowledges the batch's Pub/Sub
// messages — the stage that made the data durable acks it (bundle
// finalization is not a safe ack point in Beam Go v2.77). CompleteHours
// shuffles only one small notice per written file and writes each hour's
// _COMPLETE marker from an event-time timer at hour end + allowed lateness.
//
// # Publication (hourly)
//
// Publish reads an hour's raw and late part files and keys each record by
// shard = fnv32a(event id) mod Shards: ONE shuffle per event. A shard sorts
// its records by (event id, publish time, bytes), keeps the first of each
// event id, drops event ids published in the lookback hours, and writes
// part-0000i-of-0000n.avro with a sync marker derived from its name: the
// output is a pure function of the input set, so a re-run writes the same
// bytes.
//
// # View
//
// DecryptFiles decrypts dataset files in batches (one key lookup per batch)
// into per-file parts that the view pipeline joins.
//
// # Keys
//
// DoFns carry only a keys URL (serialized with the pipeline) and open the
// client in Setup through a process-wide registry (OpenKeys): "local:DIR"
// bolt stores allow one opener per process. RegisterKeys injects an
// in-process key source ("registered:NAME") for tests and the demo.
//
// # Guarantees
//
//   - No plaintext PII is written: records hold ciphertexts, dead-letter
//     files hold reasons, paths and sealed payloads only.
//   - Nothing is silently dropped: every message is written, dead-lettered
//     (by reason) or routed late, and counted in metrics (MetricsNamespace).
//   - A Pub/Sub message is acked only after its files are durably closed.
//
// # Failure modes
//
// Key-service errors are retried with jittered backoff up to a budget; then
// the batch is dead-lettered as key_unavailable (never written in
// plaintext). A failed write is a bundle failure: the runner retries it,
// nothing is acked, and Pub/Sub redelivers (raw may then hold duplicates,
// which hourly removes).
package transforms
