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

// Accounting is the input accounting of one published part of an hour:
// RawRecords + LateRecords = Published + DuplicatesDropped + LookbackDropped.
type Accounting struct {
	RawFiles          int   `json:"raw_files"` // raw and late part files read
	RawRecords        int64 `json:"raw_records"`
	DuplicatesDropped int64 `json:"duplicates_dropped"`
	// LookbackDropped: already published, in the hours within the lookback
	// (and, for a supplement, in the hour's earlier parts).
	LookbackDropped int64 `json:"lookback_dropped"`
	LateRecords     int64 `json:"late_records"`
	Published       int64 `json:"published"`
}

// ManifestFormatVersion is the version of _MANIFEST.json written now:
// 2 added Part, Parts, RunID and PublishedAt (a format-1 manifest is a
// main part whose consumed parts are not known); 3 records in
// schema_fingerprint the SHA-256 of the Avro specification's Parsing
// Canonical Form (formats 1 and 2: of goavro's canonical form, which keeps
// logical types; schemas.EncryptedSchema.FingerprintMatches accepts both).
const ManifestFormatVersion = 3

// ManifestDoc is _MANIFEST.json, of an hour's main part or of one of its
// late supplements.
type ManifestDoc struct {
	FormatVersion     int            `json:"format_version"`
	EventType         string         `json:"event_type"`
	SchemaVersion     int            `json:"schema_version"`
	Hour              string         `json:"hour"`
	Part              string         `json:"part,omitempty"` // MainPart or SupplementPart(n); "" in format 1 (main)
	SchemaFingerprint string         `json:"schema_fingerprint"`
	Records           int64          `json:"records"`
	Files             []ManifestFile `json:"files"` // names relative to the part's directory
	Input             Accounting     `json:"input"`
	// Parts are the raw and late part files this part consumed (names
	// relative to the root). Each part file of an hour is consumed by
	// exactly one part.
	Parts       []string  `json:"parts,omitempty"`
	Lineage     Lineage   `json:"lineage"`
	RunID       string    `json:"run_id,omitempty"`
	PublishedAt time.Time `json:"published_at,omitzero"`
}

// PartName is the manifest's part ("main" for format 1).
func (m *ManifestDoc) PartName() string {
	if m.Part == "" {
		return MainPart
	}
	return m.Part
}

// Lineage records where a dataset came from.
type Lineage struct {
	// InputHours: the hour itself first, then every hour whose published
	// data the part was deduplicated against (within the lookback, before
	// it, and for a supplement also after it).
	InputHours  []string `json:"input_hours"`
	CodeVersion string   `json:"code_version"`
	KeyScope    string   `json:"key_scope,omitempty"`
}

// More areas: what running jobs record (writer records, stop requests),
// publication leases, and the staging area of hourly runs.
const (
	WritersArea = "writers"
	LeasesArea  = "leases"
	TmpArea     = "tmp"
)

// CompleteName is the object name of an hour's completion marker.
func CompleteName(eventType string, version int, hour time.Time) string {
	return RawDir(eventType, version, hour) + Complete
}

// WriterDir is the directory of one ingest run's records.
func WriterDir(runID string) string { return WritersArea + "/" + runID + "/" }

// WriterRecord is the record of one writer of a run: "writers/<run>/<part>.json",
// part naming a Pub/Sub pull stream ("stream-003"), or "replay" for a
// bounded run.
func WriterRecord(runID, part string) string { return WriterDir(runID) + part + ".json" }

// WriterHourMarker is the marker a bounded run writes before its first raw
// file of an hour: "writers/<run>/hours/<type>/v<version>/<YYYY-MM-DDTHH>".
func WriterHourMarker(runID, eventType string, version int, hour time.Time) string {
	return fmt.Sprintf("%shours/%s/v%d/%s", WriterDir(runID), eventType, version, FormatHour(hour))
}

// ParseWriterHourMarker reads the hour out of a WriterHourMarker name.
func ParseWriterHourMarker(name string) (runID string, h Hour, ok bool) {
	p := strings.Split(name, "/")
	if len(p) != 6 || p[0] != WritersArea || p[2] != "hours" || !strings.HasPrefix(p[4], "v") {
		return "", Hour{}, false
	}
	v, err := strconv.Atoi(p[4][1:])
	if err != nil || v < 1 {
		return "", Hour{}, false
	}
	t, err := time.Parse(HourFormat, p[5])
	if err != nil {
		return "", Hour{}, false
	}
	return p[1], Hour{Type: p[3], Version: v, Hour: t.UTC()}, true
}

// WriterStop is the object that asks every stream of a run to stop (a
// planned stop: SIGTERM of the launching process).
func WriterStop(runID string) string { return WriterDir(runID) + "_STOP" }

// LeaseName is the publication lease of one (type, version, hour).
func LeaseName(eventType string, version int, hour time.Time) string {
	return fmt.Sprintf("%s/%s/v%d/%s.json", LeasesArea, eventType, version, hourPath(hour))
}

// MainPart names the main part of a published hour; supplements are
// "late-0001", "late-0002", ...
const MainPart = "main"

// SupplementPart is the name of an hour's n-th late supplement (n >= 1).
func SupplementPart(n int) string { return fmt.Sprintf("late-%04d", n) }

// ParseSupplementPart returns n of "late-000n" (0, false for anything else).
func ParseSupplementPart(part string) (int, bool) {
	s, ok := strings.CutPrefix(part, "late-")
	if !ok || len(s) != 4 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// PartDir is the directory of one part of a published hour: the hour's
// dataset directory for the main part, "<dir>/late-000n/" for a supplement.
func PartDir(eventType string, version int, hour time.Time, part string) string {
	d := DatasetDir(eventType, version, hour)
	if part == MainPart || part == "" {
		return d
	}
	return d + part + "/"
}

// StagingDir is where one hourly run writes the files of one part before
// it publishes them: "tmp/hourly/<run>/<type>/v<version>/<day>/<HH>/<part>/".
func StagingDir(runID, eventType string, version int, hour time.Time, part string) string {
	return fmt.Sprintf("%s/hourly/%s/%s/v%d/%s/%s/", TmpArea, runID, eventType, version, hourPath(hour), part)
}

// ShardFile is the base name of dataset file i of n of a part.
func ShardFile(i, n int) string { return fmt.Sprintf("part-%05d-of-%05d.avro", i, n) }

// StatsDir is where hourly's shards leave their accounting (one object per
// shard) for the driver: inside the run's staging directory of the part,
// removed with it.
func StatsDir(runID, eventType string, version int, hour time.Time, part string) string {
	return StagingDir(runID, eventType, version, hour, part) + "stats/"
}

// StatsName is the accounting object of one shard.
func StatsName(runID, eventType string, version int, hour time.Time, part string, shard int) string {
	return StatsDir(runID, eventType, version, hour, part) + fmt.Sprintf("shard-%05d.json", shard)
}

// LoadMarker is the BigQuery load marker of an hour's first n published
// parts (the main part and n-1 supplements) in one destination dataset,
// next to the hour's _SUCCESS: "<dir>/_BQ_LOADED.<project>.<dataset>.json"
// for the main part alone (the name markers had before supplements
// existed), "<dir>/_BQ_LOADED.<project>.<dataset>.parts-<n>.json" for
// n > 1. An hour's parts only ever grow (supplements are numbered and
// immutable), so the count names the set: a new supplement means a new
// marker, and a marker, once written, stays true. One marker per
// destination, so the same hour can be loaded into a staging and a
// production dataset.
func LoadMarker(h Hour, project, bqDataset string, parts int) string {
	name := DatasetDir(h.Type, h.Version, h.Hour) + LoadMarkerPrefix + project + "." + bqDataset
	if parts > 1 {
		name += ".parts-" + strconv.Itoa(parts)
	}
	return name + ".json"
}

// LoadMarkerPrefix begins the base name of every load marker.
const LoadMarkerPrefix = "_BQ_LOADED."
