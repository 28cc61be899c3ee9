package transforms

import (
	"strconv"
	"strings"
	"time"

	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
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

// batchCounts is a batch's accounting counters (MetricsNamespace, and
// MetricsNamespaceHours with hourCounters), by name: each of outs counted
// in, and written, late (its group's hour was closed) or dead, and the
// batch's bad lines in and dead in badHour. Counts are keyed by value;
// each counter's name is formatted once per batch, not once per message.
func batchCounts(outs []record.Outcome, bad int, badHour time.Time, groups map[HourKey3]*group, hourCounters bool) map[string]int64 {
	type counterKey struct {
		kind, reason string // reason: of CountDead
		hk           HourKey3
	}
	in := map[counterKey]int64{}
	for i := range outs {
		o := &outs[i]
		hk := HourKey3{o.EventType, o.Version, o.Hour.UnixMilli()}
		in[counterKey{CountIn, "", hk}]++
		switch {
		case o.Reject != nil:
			in[counterKey{CountDead, o.Reject.Reason, hk}]++
		case groups[hk].late:
			in[counterKey{CountLate, "", hk}]++
		default:
			in[counterKey{CountWritten, "", hk}]++
		}
	}
	if n := int64(bad); n > 0 {
		hk := HourKey3{"", 0, badHour.UnixMilli()}
		in[counterKey{CountIn, "", hk}] += n
		in[counterKey{CountDead, record.ReasonBadMessage, hk}] += n
	}
	counts := make(map[string]int64, len(in))
	for k, n := range in {
		counts[CounterName(k.kind+k.reason, k.hk.Type, k.hk.Version)] += n
		if hourCounters {
			counts[HourCounterName(k.kind+k.reason, k.hk.Type, k.hk.Version, time.UnixMilli(k.hk.HourMillis).UTC())] += n
		}
	}
	return counts
}
