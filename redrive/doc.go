// Package redrive re-ingests dead letters after a fix: `lockstream
// redrive --root R --reason REASON [--since H] [--until H]`.
//
// # Behavior
//
// [Run] reads the dead-letter files of one reason
// (deadletter/<reason>/<day>/<HH>/*.ndjson, one record.Rejection a line) of
// the hours in [Since, Until), and for each dead letter not redriven
// before: unseals its payload and its other attributes (fieldcrypt, under
// the "payload" key of the keychain that sealed them, found by the
// record's subject; AADs "_deadletter.<id>|<subject>" and
// "_deadletter_attributes.<id>|<subject>"), rebuilds the message (id,
// publish time, attributes, payload) and runs it through today's schemas
// and the anonymizer, as ingest would. Those that pass are written as
// ordinary part files of their (type, version, hour): to raw/ while the
// hour is not complete (so hourly publishes them with it), to late/ once
// it is (so hourly publishes them as the hour's next supplement,
// deduplicated). The others stay where they are and are counted by the
// reason they fail with now.
//
// A dead letter whose key is gone (the user deleted, or the "payload"
// category revoked; the root's dead-letter keychain of that day shredded
// by retention) cannot be read by anyone: it stays, counted as shredded.
// One whose payload was never sealed (user_deleted, key_unavailable,
// oversized) has nothing to redrive: it stays, counted as not sealed.
//
// # Exactly once
//
// Every attempt on a dead-letter file writes a ledger entry,
// redrive/<reason>/<day>/<HH>/<file>.<NNNN>.json (layout.RedriveDoc),
// before its part files: the message ids it re-ingests and the part files
// that hold them, whose names are a function of the dead-letter file and
// the attempt (part-redrive-<hash>-<NNNN>.avro). Ledger entries are
// created only if absent, so two redrives at once never both take an
// attempt. A later redrive skips every message id any entry lists, and
// first finishes an attempt whose part files are missing (a redrive that
// died between its ledger entry and its files) with the same messages and
// names. Dead letters stay in their files (retention removes them); status
// subtracts the redriven ones.
//
// A redrive is a bounded writer of the root (package completion): it
// records the hours it writes to raw/, so that an hour that only it wrote
// completes when it finishes, and marks the hours it can decide complete.
//
// # Failure modes
//
// A key-service error, or a root that cannot be read or written, fails the
// run: what it wrote is in the ledger, and the next redrive goes on from
// there. An attempt whose messages no longer pass (the schemas changed
// back between a crash and the next redrive) fails with an error naming
// the dead-letter file.
package redrive
