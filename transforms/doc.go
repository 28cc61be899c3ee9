// Package transforms holds lockstream's Beam Go transforms: the parts the
// pipelines (package pipelines) are built from. Every transform validates
// its configuration when it is built, not when the first element arrives.
//
// # Ingest
//
// ReadReplay emits batches of messages (one element = up to BatchSize
// messages) that AnonymizeAndWrite, fused with it, anonymizes (in slices
// of 500 messages, one key lookup each, as many at once as there are
// cores; package record) and writes as raw/late part files and
// dead-letter files through package blob, a batch's files while the next
// batch is anonymized. Before a writer's first raw file
// of an hour it records the hour under writers/<run>/hours/ (package
// completion); an hour whose _COMPLETE marker exists gets late/ files
// instead (re-checked every 10 s; a raw file written in the race is not
// lost: the hour's next supplement publishes every part file no manifest
// lists).
//
// # Pub/Sub
//
// IngestPubSub is an unbounded splittable DoFn over the Pub/Sub v2 client
// whose restriction splits into Streams parallel pull streams, which the
// runner spreads over its workers (prism runs as many at once as there are
// cores). Each stream pulls, writes and acknowledges by itself: the stage
// that made the data durable acks it, in the same process, so nothing about
// a message crosses a shuffle (bundle finalization is not a safe ack point
// in Beam Go v2.77). In a stream, a puller feeds batches to as many writers
// as there are cores; every message is leased (its ack deadline extended
// every 10 s by 60 s) from its pull until its ack; a worker holds at most
// MaxOutstandingMessages and MaxOutstandingBytes pulled and not yet
// acknowledged (the flow control is shared by the worker's streams of one
// run), and pulling pauses at either limit. A stream runs in sessions of
// 5 s: it returns (a checkpoint) only with nothing outstanding. It emits
// the names of the files it wrote when the session ends, not as it writes
// them: the streams start in one bundle, and prism splits a bundle (so the
// other streams run beside the first) only while it sees no output from it
// (BENCHMARKS.md: with names emitted as written, one stream pulled a whole
// backlog alone).
//
// A stream's watermark is the oldest publish time it holds, and at most the
// start of its last pull that left the subscription empty minus
// MaxDeliveryDelay; messages whose ack failed hold it until their lease
// has surely expired (they are redelivered). A stream rewrites its writer
// record (writers/<run>/stream-NNN.json) every 10 s and before its first
// pull; stream 0 also observes the completion of the root's open hours and
// writes their _COMPLETE markers. A key-service outage holds a batch (its
// messages stay leased and hold the watermark) until the service answers:
// nothing is written late or dead-lettered for it. IdleTimeout drains a
// stream (state drained: the hours it wrote may complete); StopAfter,
// MaxMessages or the run's stop object (layout.WriterStop) stop it as
// planned (state stopped: later hours stay open).
//
// IngestPubSubDataflow uses Beam's native Pub/Sub read instead (Dataflow
// only): batches within a bundle, written before the bundle commits.
//
// # Publication (hourly)
//
// Publish reads the raw and late part files of one part of an hour (the
// main part or a late supplement); each record belongs to shard =
// fnv32a(event id) mod Shards. Up to DirectShards shards (the default is
// 4), one bundle reads every part file once, keeping each record in its
// shard's arena, then writes the shards side by side: no record crosses a
// shuffle, which on prism copies its bytes several times over. With more
// shards, each file is read once and its records are shuffled to their
// shards (one element per file and shard), so that the shards of a big
// hour are spread over workers. A shard sorts
// its records by (event id, publish time, bytes), keeps the first of each event
// id, drops event ids already published (the neighbouring hours within the
// lookback and, for a supplement, the hour's earlier parts), and writes
// part-0000i-of-0000n.avro to the run's staging directory, with a sync
// marker derived from the file's final name: the output is a pure function
// of the input set, so any run writes the same bytes. The driver
// (pipelines.Hourly) publishes the staged files under its lease.
//
// # View
//
// DecryptFiles decrypts dataset files in batches (one key lookup per batch)
// into per-file parts that the view pipeline joins: NDJSON straight from
// the records' columns (record.Decryptor.AppendJSONLines), Avro through
// record.Plain. A file's batches are decrypted side by side, one per core
// (a file at a time per worker: memory holds one file's records), and
// written in order, as each part is, batch by batch. Its counters are
// added once per file.
//
// # Keys
//
// DoFns carry only their configuration (serialized with the pipeline). In
// Setup they take what a worker shares (key source and derived-key cache,
// Pub/Sub client, flow control, the dataset ids hourly wrote) from env,
// the package's one registry of worker environments, keyed by the full
// configuration that made each: runs of one process with different
// settings never share one. "local:DIR" bolt stores allow one opener per
// process. RegisterKeys and RegisterKeySource inject an in-process key
// source ("registered:NAME") for tests, benchmarks and the demo.
//
// # Guarantees
//
//   - No plaintext PII is written: records hold ciphertexts, dead-letter
//     files hold reasons, paths and sealed payloads and attributes only.
//   - Nothing is silently dropped: every message is written, dead-lettered
//     (by reason) or routed late, and counted in metrics (MetricsNamespace).
//   - A Pub/Sub message is acked only after its files are durably closed,
//     and stays leased until then.
//   - No process-global state carries a message between stages: each Pub/Sub
//     stream writes and acknowledges what it pulled.
//
// # Failure modes
//
// Key-service errors of a replay batch are retried with jittered backoff up
// to a budget (KeyRetryBudget); then the run fails with the cause, nothing
// of the batch written, and a re-run completes it. A Pub/Sub batch is held
// instead: handed back unwritten and redelivered. A failed write is
// a bundle failure: the runner retries it, nothing is acked, and Pub/Sub
// redelivers when the leases expire (raw may then hold duplicates, which
// hourly removes). A failed acknowledgement hands the messages back: they
// are written again and deduplicated.
package transforms
