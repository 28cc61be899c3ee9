package transforms

import (
	"strconv"
	"strings"
	"time"

	"github.com/lockstream/lockstream/layout"
)

// The write stage's counters: their names and namespaces.

// Metric namespace of the counters of the write stage. Counter names are
// "<kind>|<type>|<version>" (CounterName) with kind one of in, written,
// late, dead:<reason>; type "" and version 0 for messages whose type is
// unknown. They carry no hour, so a job has a bounded set of them (types ×
// versions × kinds): on Dataflow every counter name is a monitoring
// series (the job page, Cloud Monitoring's user counters), for as long as
// the job runs.
const MetricsNamespace = "lockstream.ingest"

// MetricsNamespaceHours holds the same counts per hour, named
// "<kind>|<type>|<version>|<hour>" (HourCounterName), only when
// WriteConfig.HourCounters is set: the end-of-run accounting table of a
// run whose metrics end with it (pipelines.Ingest sets it on every runner
// but Dataflow).
const MetricsNamespaceHours = "lockstream.ingest.hours"

// Counter kinds.
const (
	CountIn      = "in"
	CountWritten = "written"
	CountLate    = "late"
	CountDead    = "dead:" // + reason
)

// CounterName builds a counter name of the write stage (namespace
// MetricsNamespace): "<kind>|<type>|<version>".
func CounterName(kind, eventType string, version int) string {
	return kind + "|" + eventType + "|" + strconv.Itoa(version)
}

// HourCounterName builds a per-hour counter name of the write stage
// (namespace MetricsNamespaceHours): "<kind>|<type>|<version>|<hour>".
func HourCounterName(kind, eventType string, version int, hour time.Time) string {
	return CounterName(kind, eventType, version) + "|" + layout.FormatHour(hour)
}

// counterNamespace is the namespace of a name of writeResult.counts: per
// hour names have four fields (event types and reasons hold no "|").
func counterNamespace(name string) string {
	if strings.Count(name, "|") == 3 {
		return MetricsNamespaceHours
	}
	return MetricsNamespace
}
