// Package layout names every object lockstream writes under a root (the
// layout below, which README.md shows), and the manifest of a published hour.
//
//	<root>/raw/<event_type>/v<version>/<YYYY-MM-DD>/<HH>/...        ingest output (may hold duplicates)
//	<root>/raw/<event_type>/v<version>/<YYYY-MM-DD>/<HH>/_COMPLETE  the hour is closed
//	<root>/datasets/<event_type>/v<version>/<YYYY-MM-DD>/<HH>/...   hourly output: deduped, immutable
//	<root>/datasets/.../<HH>/_MANIFEST.json, _SUCCESS               published last
//	<root>/deadletter/<reason>/<YYYY-MM-DD>/<HH>/...                rejected messages, no plaintext PII
//
// Hours are UTC. Paths are built only from event types, versions, reasons
// and hours — never from user data.
package layout
