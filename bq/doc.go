// Package bq is lockstream's BigQuery side: it loads published hours into
// hour-partitioned tables, maintains the restricted keys table, and
// generates the decrypted views that open ciphertexts in SQL with
// AEAD.DECRYPT_BYTES / DETERMINISTIC_DECRYPT_BYTES.
//
// # Behavior
//
// Load. [Loader.LoadHour] loads one published hour (its main part's
// _SUCCESS must exist) into <dataset>.<Type>_v<N>. An hour's data is its
// main part plus its late supplements (late-0001/, late-0002/, … each with
// its own _MANIFEST.json and _SUCCESS), read through package dataset (the one
// manifest reader), so the partition is always their union: one load job
// over the gs:// URIs of every file of every published part (SourceFormat
// AVRO, UseAvroLogicalTypes), into the partition decorator
// <table>$YYYYMMDDHH with WRITE_TRUNCATE and CREATE_NEVER. A missing table is
// created first from the encrypted schema
// ([TableSchema]: bytes→BYTES, string→STRING, int/long→INTEGER,
// timestamp-millis→TIMESTAMP, float/double→FLOAT, boolean→BOOLEAN,
// enum→STRING; ["null",T]→NULLABLE, else REQUIRED; docs→descriptions),
// partitioned by HOUR on _hour and clustered on _subject; an existing table
// with other partitioning or incompatible columns is refused ([ErrTable]).
// Every part's manifest must describe the hour and that part, in this
// binary's schema fingerprint. After the job succeeds (and its output row
// count equals the parts' records), a marker naming the set of parts it
// loaded is written next to _SUCCESS ([layout.LoadMarker]:
// _BQ_LOADED.<project>.<dataset>.json for the main part alone,
// …<dataset>.parts-<n>.json for n parts; job id, table, parts, rows); a later
// LoadHour that finds the marker of the parts published now issues no
// request at all. A supplement published later has no marker yet, so the
// next LoadHour replaces the partition with all parts (WRITE_TRUNCATE again)
// and writes the marker of the new set; the older markers stay, true of
// what they name. The parts are read again after the job: if a supplement
// appeared meanwhile, the partition is loaded again (at most 3 rounds)
// before any marker is written.
//
// Retry rule. A load job that finished with an error is retried — with a
// new job into the same partition, WRITE_TRUNCATE — only if its errorResult
// reason is one of [RetryableReasons] (backendError, rateLimitExceeded,
// internalError, jobBackendError, jobInternalError), at most
// Loader.MaxAttempts jobs in all (default 4), waiting Loader.Backoff (default
// 15 s) before the first retry and twice as long before each next one. Any
// other reason (invalid, invalidQuery, notFound, accessDenied,
// quotaExceeded, unknown ones) fails at once with a [*JobError] carrying the
// job's errorResult and error list. jobs.insert and jobs.get transport
// errors are retried by the client library itself; a Wait that fails
// returns an error without a marker.
//
// Keys table. [KeyRows] asks the key service (keyclient ForDecrypt, batches
// of 500) for every live key version of each subject and builds one row per
// (subject, category, kind) the schemas use: (_subject STRING, category
// STRING, version INT64, keyset BYTES, deterministic BOOL), where keyset is
// insecurekeyset.Binary of insecurekeyset.AEAD (deterministic = FALSE) or
// insecurekeyset.Deterministic (TRUE) of all versions, and version the
// highest. Subjects come from the published files ([Subjects]: the distinct
// _subject of the files of every part, main and supplements, of each
// hour). Deleted and unknown subjects and
// revoked categories get no row. [KeysTable.Replace] is a truncate-and-reload:
// ONE load job, NDJSON uploaded with the job, WRITE_TRUNCATE,
// CREATE_IF_NEEDED. We chose it over a DELETE query because key bytes must
// never go into SQL text or query parameters (BigQuery keeps both in its job
// history for 180 days), and a DML DELETE cannot touch rows still in a
// streaming buffer; the load swaps the table atomically. Its cost: every
// export reads the subjects of all published hours.
//
// Views. [ViewSQL] generates, from the encrypted schemas alone, a view that
// passes non-PII and metadata columns through and turns each PII column
// into
//
//	SAFE.AEAD.DECRYPT_BYTES(k.keyset, t.`f`, CONCAT('<Type>.<f>|', t.`_subject`))
//
// (SAFE.DETERMINISTIC_DECRYPT_BYTES for deterministic fields), with the keys
// table LEFT JOINed once per (category, deterministic) on _subject, and the
// plaintext converted back (SAFE_CONVERT_BYTES_TO_STRING for strings,
// SAFE_CAST(… AS INT64) of that for int/long, bytes as is). One view per
// event type covers every version: a SELECT per version table, UNION ALL,
// over the union of the versions' columns (a column a version lacks is a
// typed NULL in its rows) plus _schema_version. [Views.Apply] creates or
// patches <Type>_decrypted for every registered type.
//
// # Guarantees
//
//   - A partition is never loaded twice into: each job replaces the whole
//     hour partition (WRITE_TRUNCATE), so a retry, a crash before the marker
//     or a concurrent re-run yields the same rows, never duplicates.
//   - With the marker present, re-running issues no load job.
//   - A marker names every part its job loaded: the partition then holds
//     exactly the union of those parts.
//   - The views decrypt exactly what fieldcrypt wrote (same keyset, same
//     AAD, same primitive); tests evaluate the generated SQL with Tink on
//     record.Anonymizer output. No keys row → NULL, never an error.
//   - The keys table has at most one row per (subject, category,
//     deterministic), so the joins never multiply event rows.
//   - Errors and log lines carry table names, job ids, counts, subjects
//     (opaque ids) and BigQuery's error reasons; never key bytes ([Keyset]
//     prints "[redacted]") and never plaintext (BigQuery only ever sees
//     ciphertexts of PII fields).
//
// # Crypto-shredding in BigQuery: the bound
//
// Deleting a user in the key service makes their rows NULL in the views at
// the next export-keys run (schedule it after deletions; hourly is usual).
// Until then the old keys row is live. After it, the previous versions of
// the keys table remain recoverable by anyone with access to the keys table
// through BigQuery time travel (FOR SYSTEM_TIME AS OF, up to the dataset's
// max_time_travel_hours: 7 days by default, 2 days minimum) and then by
// Google through fail-safe for 7 more days. So in BigQuery a shred is final
// at most (export interval + time travel window + 7 days) after the
// deletion: 14 days plus the export interval by default, 9 days plus it
// with a 48-hour window. Put the keys table in its own dataset with
// max_time_travel_hours = 48, readable only by the views (authorized
// views). Copies made by analysts of decrypted view results are outside
// this bound. The event tables themselves only hold ciphertexts and need no
// deletion.
//
// # Failure modes
//
//   - [ErrNotPublished]: no _SUCCESS of the main part yet; run after `hourly`.
//   - [ErrManifest]: a part's manifest missing, for another hour or part, or
//     a schema fingerprint this binary does not know — permanent.
//   - [ErrTable]: the destination table exists with other partitioning or
//     columns (or a view's name is taken by a table) — fix the table.
//   - [*JobError] (errors.Is [ErrLoadFailed]; [IsRetryable]): a job failed;
//     retryable ones were already retried per the rule above.
//   - [ErrRowCount]: BigQuery loaded another row count than the manifest;
//     no marker, the next run reloads the partition.
//   - A marker write failure after a successful load is reported; the next
//     run loads the partition again (same rows).
//   - Two loaders racing on one hour while a supplement appears: the one
//     whose job ends last may have loaded fewer parts than the other's
//     marker names. Each loader reads the parts again after its job and
//     reloads if they grew, so this is only left behind when that loader
//     dies between its job and that check; delete the hour's
//     _BQ_LOADED.* markers to reload it.
//   - Export: a key-service failure (whole call, or a per-subject error
//     other than deleted/unknown) fails before any BigQuery request — a
//     partial keys table would hide live users' data.
package bq
