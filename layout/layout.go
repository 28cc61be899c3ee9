package layout

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Marker and manifest names.
const (
	Complete = "_COMPLETE"
	Manifest = "_MANIFEST.json"
	Success  = "_SUCCESS"
)

// Area roots.
const (
	RawArea        = "raw"
	DatasetsArea   = "datasets"
	DeadLetterArea = "deadletter"
	LateArea       = "late"
)

// HourFormat is the form of --hour flags: 2026-11-23T06.
const HourFormat = "2006-01-02T15"

// ParseHour parses "2026-11-23T06" (also accepts a full RFC 3339 time,
// truncated to its UTC hour).
func ParseHour(s string) (time.Time, error) {
	if t, err := time.Parse(HourFormat, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC().Truncate(time.Hour), nil
	}
	return time.Time{}, fmt.Errorf("layout: hour %q is not of the form 2026-11-23T06", s)
}

// FormatHour formats an hour as "2026-11-23T06".
func FormatHour(t time.Time) string { return t.UTC().Format(HourFormat) }

func hourPath(t time.Time) string { return t.UTC().Format("2006-01-02/15") }

// RawDir is the directory (with trailing slash) of one raw hour.
func RawDir(eventType string, version int, hour time.Time) string {
	return fmt.Sprintf("%s/%s/v%d/%s/", RawArea, eventType, version, hourPath(hour))
}

// DatasetDir is the directory (with trailing slash) of one published hour.
func DatasetDir(eventType string, version int, hour time.Time) string {
	return fmt.Sprintf("%s/%s/v%d/%s/", DatasetsArea, eventType, version, hourPath(hour))
}

// DeadLetterDir is the directory of one reason and hour.
func DeadLetterDir(reason string, hour time.Time) string {
	return fmt.Sprintf("%s/%s/%s/", DeadLetterArea, reason, hourPath(hour))
}

// LateDir is where events that arrive after their hour was closed go, per
// type, version and hour, to be picked up by a later re-publication.
func LateDir(eventType string, version int, hour time.Time) string {
	return fmt.Sprintf("%s/%s/v%d/%s/", LateArea, eventType, version, hourPath(hour))
}

// Hour is one (event type, version, hour) unit of publication.
type Hour struct {
	Type    string
	Version int
	Hour    time.Time
}

func (h Hour) String() string { return fmt.Sprintf("%s v%d %s", h.Type, h.Version, FormatHour(h.Hour)) }

// ParseDir reads the Hour out of an object name under raw/, datasets/ or
// late/ (e.g. raw/PlaybackEvent/v1/2026-11-23/06/part-0.avro).
func ParseDir(name string) (area string, h Hour, file string, ok bool) {
	p := strings.Split(name, "/")
	if len(p) < 6 || (p[0] != RawArea && p[0] != DatasetsArea && p[0] != LateArea) || !strings.HasPrefix(p[2], "v") {
		return "", Hour{}, "", false
	}
	v, err := strconv.Atoi(p[2][1:])
	if err != nil || v < 1 {
		return "", Hour{}, "", false
	}
	t, err := time.Parse("2006-01-02/15", p[3]+"/"+p[4])
	if err != nil {
		return "", Hour{}, "", false
	}
	return p[0], Hour{Type: p[1], Version: v, Hour: t}, strings.Join(p[5:], "/"), true
}

// ManifestFile describes one data file of a published hour.
type ManifestFile struct {
	Name    string `json:"name"` // relative to the hour directory
	Records int64  `json:"records"`
	Bytes   int64  `json:"bytes"`
	SHA256  string `json:"sha256"`
}

// Accounting is the input accounting of one published hour.
type Accounting struct {
	RawFiles          int   `json:"raw_files"`
	RawRecords        int64 `json:"raw_records"`
	DuplicatesDropped int64 `json:"duplicates_dropped"`
	LookbackDropped   int64 `json:"lookback_dropped"` // already published in the previous hour(s)
	LateRecords       int64 `json:"late_records"`
	Published         int64 `json:"published"`
}

// ManifestDoc is _MANIFEST.json.
type ManifestDoc struct {
	FormatVersion     int            `json:"format_version"`
	EventType         string         `json:"event_type"`
	SchemaVersion     int            `json:"schema_version"`
	Hour              string         `json:"hour"`
	SchemaFingerprint string         `json:"schema_fingerprint"`
	Records           int64          `json:"records"`
	Files             []ManifestFile `json:"files"`
	Input             Accounting     `json:"input"`
	Lineage           Lineage        `json:"lineage"`
}

// Lineage records where a dataset came from.
type Lineage struct {
	InputHours  []string `json:"input_hours"`
	CodeVersion string   `json:"code_version"`
	KeyScope    string   `json:"key_scope,omitempty"`
}
