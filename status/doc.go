// Package status reports, for a lockstream root, where each (event type,
// version, hour) stands: raw part files, completion (and who observed it),
// publication (main part and late supplements), late parts still pending,
// dead letters, BigQuery loads, and for an hour that is not complete, why
// it waits; and the ingest writers whose records decide completion. It is
// `lockstream status`.
//
// # Behavior
//
// [Build] reports the hours H with Since <= H < Until (by default the 24
// hours before Now, up to and including the current hour) of every
// registered type and version (Options.Types, Options.Version restrict
// them) that have anything under the root: a raw or late part file, a
// _COMPLETE marker, a dataset object, a dead letter, or a writer's hour
// marker. An hour with none of these is not shown (hourly publishes
// nothing for it).
//
//   - Raw parts: the part files under raw/ (names only: their times would
//     take a request per file).
//   - Complete: the _COMPLETE marker's observer and time
//     (completion.ReadMarker); without a marker, completion.Decide over
//     the writer records at Now: complete (marked: false — the next ingest
//     writer or hourly run that looks writes the marker), or not complete,
//     and then Waiting is the decision's reason ("waiting for live writer
//     run-x/stream-000 (watermark …, heartbeat 2m0s ago)", "no writer has
//     passed 2026-11-23T07 yet …").
//   - Published, records, supplements: dataset.Read (main part and late
//     supplements, each counted once its _SUCCESS exists).
//   - Late pending: part files no published part consumed
//     (dataset.Pending); for an unpublished hour, every late/ part file.
//   - Dead-lettered: the lines of the hour's dead-letter files
//     (deadletter/<reason>/<day>/<HH>/*.ndjson, one record.Rejection each)
//     whose attributes event_type and schema_version name the row's
//     schema, by reason; lines naming no registered schema (or that are no
//     Rejection) go to a row of type [UnknownType], version 0, shown only
//     when no type or version is selected.
//   - BigQuery: every load marker next to the hour's _SUCCESS
//     (layout.LoadMarker): the destination "project.dataset", how many parts
//     the load covered, and whether that is every part published now.
//   - Redriven: of those dead letters, the ones lockstream redrive
//     re-ingested (its ledger entries, layout.RedriveLedger), by reason.
//   - State: published with supplements ("supplemented"), published,
//     complete, dead_letters (no raw or late part: every message of the
//     hour was dead-lettered, so there is nothing to complete), stuck (not
//     complete at its Deadline: its end plus lateness plus
//     Options.StuckAfter, 30 minutes by default; lateness is the writers'
//     largest), or waiting.
//   - Input and Lineage: the sums of the published parts' manifests
//     (records read, duplicates dropped, late records) and where they came
//     from (the hours deduplicated against, run ids, code versions).
//
// Attention lists, one line each, what an operator should look at: stuck
// hours, complete hours not published past their deadline, late parts no
// supplement holds, BigQuery loads that miss a part, dead letters not
// redriven (by reason), stale writers.
//
// [WriteHTML] renders a report as one self-contained page (no network
// fetches): an hour grid per type and version coloured by state, each
// cell's accounting on hover or click, the attention list and the writers.
// [Exporter] exports a report as Prometheus gauges with bounded labels
// (type, version, reason, state, kind; never an hour).
//
// Writers are the records of completion.Load whose heartbeat is at or
// after Since, or that are live at Now; a record still "running" whose
// heartbeat is older than its stale_after is stale (a crashed writer: it
// holds no hour).
//
// # Guarantees
//
//   - Status only reads: Build reads through a view of the root that
//     refuses every write ([ErrReadOnly]); it never writes a _COMPLETE
//     marker, even for an hour the writers decide complete.
//   - Requests: one completion.Load; one listing of raw/, late/ and
//     datasets/ per type, version and day of the range (every later
//     question about an hour of that day is answered from it); one listing
//     of deadletter/ (reasons come first in its names, so no narrower
//     listing finds every reason) and a read of each dead-letter file of
//     the range; one listing of redrive/ and a read of each ledger entry of
//     the range; a read of each _COMPLETE marker that exists, and of the
//     manifests of published hours only.
//   - The JSON shape below is stable: fields are only ever added.
//
// # JSON
//
// `lockstream status --format json` writes one document, a [Report]:
//
//	{"since": "2026-11-22T07:00:00Z", "until": "2026-11-23T07:30:00Z", "now": "2026-11-23T07:30:00Z",
//	 "hours": [
//	  {"type": "PlaybackEvent", "version": 1, "hour": "2026-11-23T06",
//	   "raw_parts": 12,
//	   "complete": {"marked": true, "observed_by": "run-a/stream-000",
//	                "completed_at": "2026-11-23T07:03:12Z", "vouchers": ["run-a/stream-000"]},  // or null
//	   "published": true, "records": 10234, "supplements": 1, "late_pending": 1,
//	   "dead_lettered": {"missing_field": 3},                     // {} when none
//	   "bigquery": [{"dataset": "proj.events", "parts": 2, "current": true}],  // [] when none
//	   "waiting": "waiting for live writer …",                    // absent when complete
//	   "state": "supplemented", "deadline": "2026-11-23T07:32:00Z",
//	   "input": {"raw_files": 3, "raw_records": 10240, "duplicates_dropped": 6, "lookback_dropped": 0,
//	             "late_records": 2, "published": 10234},               // null until published
//	   "lineage": {"input_hours": ["2026-11-23T06", "2026-11-23T05"], "code_versions": ["…"],
//	               "run_ids": ["run-h1"], "parts": ["main 10232", "late-0001 2"]},  // null until published
//	   "redriven": {"missing_field": 1}}                           // {} when none
//	 ],
//	 "writers": [
//	  {"id": "run-a/stream-000", "kind": "stream", "source": "projects/p/subscriptions/s",
//	   "state": "running", "note": "…", "watermark": "2026-11-23T06:41:00Z",  // watermark null: none yet
//	   "lateness": "2m0s", "heartbeat_at": "2026-11-23T07:28:00Z", "heartbeat_age": "2m0s",
//	   "live": true, "stale": false}
//	 ],
//	 "stuck_after": "30m0s", "lateness": "2m0s",
//	 "attention": ["PlaybackEvent v1 2026-11-23T05 is complete but not published, …"]}
//
// Hours are sorted by type ([UnknownType] last), version and hour; writers
// by id. complete.forced is true for a marker hourly --force wrote;
// complete.observed_by and completed_at are absent when marked is false.
//
// # Failure modes
//
// A root that cannot be listed or read fails the whole report (no partial
// table); an option that does not check ([CheckOptions]: since not before
// until, an unregistered type or version) fails before anything is read.
// A dead-letter file removed meanwhile (retention) counts as empty.
package status
