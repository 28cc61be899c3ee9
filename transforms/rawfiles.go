package transforms

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// The raw area, as ingest writes it and hourly reads it:
//
//	raw/<type>/v<version>/<YYYY-MM-DD>/<HH>/part-<batch id>.avro   Avro OCF (FileCodec: snappy), the encrypted schema of type/version
//	raw/<type>/v<version>/<YYYY-MM-DD>/<HH>/_COMPLETE              CompleteMarker JSON, written once when the hour closes
//	late/<type>/v<version>/<YYYY-MM-DD>/<HH>/part-<batch id>.avro  same format: events that arrived after their hour closed
//	deadletter/<reason>/<YYYY-MM-DD>/<HH>/<batch id>.ndjson       one record.Rejection JSON per line (no plaintext)
//
// Raw files may hold duplicates (redeliveries, retried batches): hourly
// dedupes by event id. A batch id is "<run id>-<source part>-<seq>", so a
// file name says which run wrote it.
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

// CompleteName is the object name of an hour's completion marker.
func CompleteName(eventType string, version int, hour time.Time) string {
	return layout.RawDir(eventType, version, hour) + layout.Complete
}

// IsPart reports whether an object name (under raw/ or late/) is a data
// file written by ingest.
func IsPart(name string) bool {
	base := name[strings.LastIndexByte(name, '/')+1:]
	return strings.HasPrefix(base, PartPrefix) && strings.HasSuffix(base, PartExt)
}

// CompleteFormatVersion is the version of the CompleteMarker JSON.
const CompleteFormatVersion = 1

// CompleteMarker is the JSON content of raw/.../<HH>/_COMPLETE: the hour is
// closed for ingest (the watermark passed its end plus the allowed lateness);
// events of it that arrive later go to late/. Files lists the raw files the
// closing run wrote for the hour (names relative to the hour directory);
// files of other runs (an earlier, killed run) may also be in the directory
// and are valid input too.
type CompleteMarker struct {
	FormatVersion int              `json:"format_version"`
	EventType     string           `json:"event_type"`
	SchemaVersion int              `json:"schema_version"`
	Hour          string           `json:"hour"` // layout.FormatHour
	Files         []string         `json:"files"`
	Records       int64            `json:"records"`       // records in Files (duplicates included)
	DeadLettered  map[string]int64 `json:"dead_lettered"` // messages of this type and hour dead-lettered by this run, by reason
	RunID         string           `json:"run_id"`
	ClosedAt      time.Time        `json:"closed_at"`
}

// ReadCompleteMarker reads the marker of one hour; blob.ErrNotExist (wrapped)
// when the hour is not closed.
func ReadCompleteMarker(ctx context.Context, b blob.Bucket, eventType string, version int, hour time.Time) (CompleteMarker, error) {
	var m CompleteMarker
	data, err := blob.ReadAll(ctx, b, CompleteName(eventType, version, hour))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("transforms: %s: %w", CompleteName(eventType, version, hour), err)
	}
	return m, nil
}
