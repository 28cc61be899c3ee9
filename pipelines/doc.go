// Package pipelines builds and runs lockstream's whole Beam pipelines:
// Ingest (streaming or bounded: source → validate → encrypt → raw hourly
// files, dead-letter, _COMPLETE markers), Hourly (batch, one type/version/
// hour: dedupe → immutable dataset, _MANIFEST.json, _SUCCESS) and View
// (batch: decrypt one published hour for an authorized service). They run
// on the runner of the --runner flag: prism by default, in-process.
//
// # Behavior
//
// Hourly returns ErrNotReady without the raw _COMPLETE marker (unless
// Force) and does nothing for an hour whose _SUCCESS exists. Otherwise it
// removes the leftovers of an unfinished earlier run, publishes, reads every
// written file back to build the manifest (records, bytes, sha256, schema
// fingerprint, input accounting, lineage), and writes _MANIFEST.json then
// _SUCCESS. View refuses an unpublished hour (ErrNotPublished).
//
// # Guarantees
//
//   - Per (type, hour), hourly: raw and late records = published plus
//     duplicates dropped plus lookback dropped (manifest "input"); ingest:
//     in = written plus dead-lettered plus late (IngestResult).
//   - No event id twice in a dataset, nor in two consecutive hours' datasets
//     (lookback, default 1 h).
//   - A published hour is never rewritten; a re-run after a crash between
//     the data files and _SUCCESS writes byte-identical files.
//
// # Failure modes
//
// Configuration errors wrap ErrConfig. A pipeline failure is returned with
// the run's error; nothing is published then (no _SUCCESS).
package pipelines
