package transforms

import (
	"strings"
	"time"

	"github.com/lockstream/lockstream/layout"
)

// The raw area, as ingest writes it and hourly reads it:
//
//	raw/<type>/v<version>/<YYYY-MM-DD>/<HH>/part-<batch id>.avro   Avro OCF (FileCodec: snappy), the encrypted schema of type/version
//	raw/<type>/v<version>/<YYYY-MM-DD>/<HH>/_COMPLETE              completion.Marker JSON, written once when the hour is complete
//	late/<type>/v<version>/<YYYY-MM-DD>/<HH>/part-<batch id>.avro  same format: events that arrived after their hour completed
//	deadletter/<reason>/<YYYY-MM-DD>/<HH>/<batch id>.ndjson       one record.Rejection JSON per line (no plaintext)
//
// Raw files may hold duplicates (redeliveries, retried batches): hourly
// dedupes by event id. A batch id starts with the run id, so a file name
// says which run wrote it: "<run>-f<file>p<range>-<seq>" for replay,
// "<run>-s<stream>-<session>-<seq>" for Pub/Sub streams.
const (
	PartPrefix    = "part-"
	PartExt       = ".avro"
	DeadLetterExt = ".ndjson"
)

// RawPartName is the object name of the raw file of one batch and hour.
func RawPartName(eventType string, version int, hour time.Time, batchID string) string {
	return layout.RawDir(eventType, version, hour) + PartPrefix + batchID + PartExt
}

// LatePartName is the object name of the late file of one batch and hour.
func LatePartName(eventType string, version int, hour time.Time, batchID string) string {
	return layout.LateDir(eventType, version, hour) + PartPrefix + batchID + PartExt
}

// DeadLetterName is the object name of the dead-letter file of one batch,
// reason and hour.
func DeadLetterName(reason string, hour time.Time, batchID string) string {
	return layout.DeadLetterDir(reason, hour) + batchID + DeadLetterExt
}

// IsPart reports whether an object name (under raw/ or late/) is a data
// file written by ingest.
func IsPart(name string) bool {
	base := name[strings.LastIndexByte(name, '/')+1:]
	return strings.HasPrefix(base, PartPrefix) && strings.HasSuffix(base, PartExt)
}
