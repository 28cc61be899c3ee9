// Package schemas holds lockstream's event schemas: Avro .avsc files with PII
// annotations (embedded from schemas/avro), the registry that loads and checks
// them, the mechanical derivation of each type's encrypted schema, Avro
// compatibility checks between versions, and the fast decoder that turns a
// JSON payload into a validated Event.
//
// # Annotations
//
// A schema file is named <Type>.v<version>.avsc and holds one record:
//
//	{"type": "record", "name": "PlaybackEvent", "namespace": "lockstream.events",
//	 "version": 1, "dedupe_key": "event_id", "unknown_fields": "reject",
//	 "fields": [
//	   {"name": "event_id", "type": "string", "doc": "..."},
//	   {"name": "user_id", "type": "string", "doc": "...",
//	    "pii": {"category": "identity", "subject": true}},
//	   {"name": "email", "type": "string", "doc": "...",
//	    "pii": {"category": "contact", "deterministic": false}}]}
//
// Record attributes: version (>= 1, matches the file name), dedupe_key (a
// required non-PII string field), unknown_fields ("reject", the default, or
// "ignore"); other attributes are ignored. Every field needs a doc; names
// starting with "_" are reserved. Field types: string, bytes, int, long,
// float, double, boolean, long/timestamp-millis, enum, and ["null", T] of
// those. "pii" is allowed on string, bytes, int and long (and nullable forms);
// deterministic only on string and bytes; exactly one field is the subject, a
// required string of category identity. Categories: see Categories().
//
// # Encrypted schema
//
// Schema.Encrypted is derived from the annotations: same record name in
// namespace lockstream.encrypted; fields in source order, each PII field
// turned into ["null","bytes"] default null (a Tink ciphertext; its "pii"
// attribute records category, primitive and AAD "<Type>.<field>|<_subject>"),
// the subject field dropped, other fields unchanged; then _subject (string),
// _key_version (int), _publish_time and _hour (long timestamp-millis).
// Fingerprint is the hex SHA-256 of the Avro specification's Parsing
// Canonical Form (ParsingCanonicalForm); FingerprintV1, what manifests before
// format 3 recorded, of goavro's canonical form.
//
// # Behavior
//
// Load/Embedded check every rule above plus goavro parsing, and fail with a
// *LoadError naming file, field and rule. Decode is a single-pass scanner for a
// flat JSON object (about one allocation per event, for all its strings). It
// always scans the whole payload, so syntax problems (malformed_json,
// invalid_utf8, too_deep) take precedence; then the first field problem in
// document order; then the first missing required field. A missing field with
// a default gets it (Value.Present is false). Schema.Validate re-checks an
// Event built in code; Registry.Resolve maps message attributes to a schema
// with unknown_event_type / unknown_version errors.
//
// Decisions: strings must be valid UTF-8; a \u escape of a lone surrogate is
// invalid_utf8 (never replaced by U+FFFD, which would silently change ids).
// \u0000 is accepted: it is valid JSON and UTF-8 and Avro carries it. The
// subject and dedupe key must not be empty (invalid_value). int/long fields
// take integer literals only (1.0 and 1e3 are wrong_type). timestamp-millis
// takes an RFC 3339 string (Z or ±HH:MM offset, fraction truncated to ms) or
// integer epoch ms, within years 0000-9999. bytes take standard base64 with
// padding. Nested objects/arrays are wrong_type for fields and skipped
// (depth-bounded) for ignored unknown members. Nesting beyond MaxDepth (32)
// is too_deep.
//
// # Guarantees
//
// Registry and Schema are immutable and safe for concurrent use; an Event is
// not. A *ValidationError never contains payload bytes: not values, not
// unknown member names (they are reported by position), only schema field
// names and byte offsets. On success every string is valid UTF-8, ints fit
// their Avro type and enum values are symbols of the schema.
//
// # Failure modes
//
// Reasons (ValidationError.Reason; also dead-letter directory names):
// malformed_json, invalid_utf8, unknown_field, missing_field, wrong_type,
// out_of_range, duplicate_field, too_deep, invalid_value; and for callers
// unknown_event_type, unknown_version (Registry.Resolve) and oversized.
// Lookup errors wrap ErrUnknownEventType / ErrUnknownVersion; compatibility
// errors wrap ErrIncompatible.
package schemas
