// Package pipelines builds and runs lockstream's whole Beam pipelines:
// Ingest (streaming or bounded: source → validate → encrypt → raw hourly
// files, dead-letter, _COMPLETE markers), Hourly (batch, one type/version/
// hour: dedupe → immutable dataset, _MANIFEST.json, _SUCCESS) and View
// (batch: decrypt one published hour for an authorized service). They run
// on the runner of the --runner flag: prism by default, in-process.
//
// # Behavior
//
// Hourly publishes one part of a (type, version, hour) under the hour's
// publication lease (package dataset): the main part of a complete hour
// (ErrNotReady, with the completion decision's reason, unless Force), or a
// numbered late supplement of the part files no published part consumed;
// nothing when there are none. A live lease of another run is
// ErrLeaseHeld, an outcome, not a failure. It stages the files under the
// run's own staging directory, copies them into place (replacing what an
// unfinished attempt left there), reads every file back to build the
// manifest (records, bytes, sha256, schema fingerprint, input accounting,
// consumed part files, lineage, run id), and writes _MANIFEST.json then
// _SUCCESS, re-checking the lease before each. View refuses an
// unpublished hour (ErrNotPublished).
//
// # Guarantees
//
//   - Per (type, hour) and part, hourly: raw and late records = published
//     plus duplicates dropped plus lookback dropped (manifest "input"); every
//     part file of an hour is consumed by exactly one part; ingest:
//     in = written plus dead-lettered plus late (IngestResult).
//   - No event id twice in an hour's parts, nor in two consecutive hours'
//     (lookback, default 1 h), when the hours of a (type, version) are
//     published in time order (as hourly --since does).
//   - A published part is never rewritten; a run that lost its lease writes
//     neither _MANIFEST.json nor _SUCCESS; runs never touch each other's
//     staging files, and the data files are the same bytes whichever run
//     writes them.
//
// # Failure modes
//
// Configuration errors wrap ErrConfig. A pipeline failure is returned with
// the run's error; nothing is published then (no _SUCCESS).
package pipelines
