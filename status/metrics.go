package status

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names of the status exporter (`lockstream status --watch
// --metrics-listen`). Labels are bounded: type and version (registered
// schemas), reason (dead-letter reasons), state, kind; never an hour or a
// writer id. Values describe the report's window (--since, 24 h by
// default) as of its last build.
const (
	MetricHours             = "lockstream_status_hours"                        // {type,version,state}
	MetricHoursStuck        = "lockstream_status_hours_stuck"                  // {type,version}
	MetricLatePending       = "lockstream_status_late_pending_parts"           // {type,version}
	MetricSupplements       = "lockstream_status_supplements"                  // {type,version}
	MetricPublishedRecords  = "lockstream_status_published_records"            // {type,version}
	MetricDeadLetters       = "lockstream_status_dead_letters"                 // {type,version,reason}
	MetricDeadLettersLeft   = "lockstream_status_dead_letters_not_redriven"    // {type,version,reason}
	MetricHeartbeatAge      = "lockstream_status_writer_heartbeat_age_seconds" // {kind}
	MetricWriters           = "lockstream_status_writers"                      // {kind,liveness}
	MetricLastUpdate        = "lockstream_status_last_update_timestamp_seconds"
	MetricUpdateErrors      = "lockstream_status_update_errors_total"
	MetricUpdateDuration    = "lockstream_status_update_duration_seconds"
	MetricWindowSeconds     = "lockstream_status_window_seconds"
	MetricOldestStuckSecond = "lockstream_status_oldest_stuck_hour_age_seconds" // {type,version}
)

// Exporter exports the gauges of the last report it was given (Update) as
// a prometheus.Collector, and counts failed builds (Failed).
type Exporter struct {
	mu       sync.Mutex
	report   *Report
	updated  time.Time
	duration time.Duration
	errors   prometheus.Counter
	descs    map[string]*prometheus.Desc
}

var _ prometheus.Collector = (*Exporter)(nil)

// NewExporter returns an Exporter with no report yet.
func NewExporter() *Exporter {
	tv := []string{"type", "version"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Exporter{
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricUpdateErrors, Help: "Status builds that failed (the root could not be read)."}),
		descs: map[string]*prometheus.Desc{
			MetricHours:             d(MetricHours, "Hours in the window with data, by state (waiting, stuck, complete, published, supplemented, dead_letters).", "type", "version", "state"),
			MetricHoursStuck:        d(MetricHoursStuck, "Hours not complete --stuck-after past their end plus lateness.", tv...),
			MetricOldestStuckSecond: d(MetricOldestStuckSecond, "How long past its deadline the oldest stuck hour is (0: none).", tv...),
			MetricLatePending:       d(MetricLatePending, "Late part files no published part holds yet.", tv...),
			MetricSupplements:       d(MetricSupplements, "Published late supplements of the hours in the window.", tv...),
			MetricPublishedRecords:  d(MetricPublishedRecords, "Records published (main parts and supplements) of the hours in the window.", tv...),
			MetricDeadLetters:       d(MetricDeadLetters, "Dead-lettered messages of the hours in the window, by reason.", "type", "version", "reason"),
			MetricDeadLettersLeft:   d(MetricDeadLettersLeft, "Dead-lettered messages of the window that lockstream redrive has not re-ingested.", "type", "version", "reason"),
			MetricHeartbeatAge:      d(MetricHeartbeatAge, "Age of the youngest writer heartbeat, by writer kind (stream, bounded).", "kind"),
			MetricWriters:           d(MetricWriters, "Writer records in the window by kind and liveness (live, stale, ended).", "kind", "liveness"),
			MetricLastUpdate:        d(MetricLastUpdate, "When the report was last built (Unix seconds)."),
			MetricUpdateDuration:    d(MetricUpdateDuration, "How long the last build took."),
			MetricWindowSeconds:     d(MetricWindowSeconds, "The window the report covers (--since to now)."),
		},
	}
}

// Update replaces the report the gauges describe.
func (e *Exporter) Update(r *Report, took time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.report, e.updated, e.duration = r, time.Now(), took
}

// Failed counts a build that failed (the last good report stays).
func (e *Exporter) Failed() { e.errors.Inc() }

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range e.descs {
		ch <- d
	}
	e.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.errors.Collect(ch)
	e.mu.Lock()
	r, updated, took := e.report, e.updated, e.duration
	e.mu.Unlock()
	if r == nil {
		return
	}
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(e.descs[name], prometheus.GaugeValue, v, labels...)
	}
	gauge(MetricLastUpdate, float64(updated.UnixNano())/1e9)
	gauge(MetricUpdateDuration, took.Seconds())
	gauge(MetricWindowSeconds, r.Now.Sub(r.Since).Seconds())

	type tv struct {
		typ     string
		version int
	}
	type agg struct {
		states                      map[string]int
		stuck, pending, supplements int
		records                     int64
		oldestStuck                 time.Duration
		dead, left                  map[string]int64
	}
	all := map[tv]*agg{}
	var order []tv
	for i := range r.Hours {
		h := &r.Hours[i]
		k := tv{h.Type, h.Version}
		a := all[k]
		if a == nil {
			a = &agg{states: map[string]int{}, dead: map[string]int64{}, left: map[string]int64{}}
			all[k] = a
			order = append(order, k)
		}
		for reason, n := range h.DeadLettered {
			a.dead[reason] += n
			a.left[reason] += max(n-h.Redriven[reason], 0)
		}
		if h.Type == UnknownType {
			continue
		}
		a.states[h.State]++
		if h.State == StateStuck {
			a.stuck++
			a.oldestStuck = max(a.oldestStuck, r.Now.Sub(h.Deadline))
		}
		a.pending += h.LatePending
		a.supplements += h.Supplements
		a.records += h.Records
	}
	for _, k := range order {
		a := all[k]
		v := strconv.Itoa(k.version)
		for reason, n := range a.dead {
			gauge(MetricDeadLetters, float64(n), k.typ, v, reason)
			gauge(MetricDeadLettersLeft, float64(a.left[reason]), k.typ, v, reason)
		}
		if k.typ == UnknownType {
			continue
		}
		for _, st := range []string{StateWaiting, StateStuck, StateComplete, StatePublished, StateSupplemented, StateDeadLetters} {
			gauge(MetricHours, float64(a.states[st]), k.typ, v, st)
		}
		gauge(MetricHoursStuck, float64(a.stuck), k.typ, v)
		gauge(MetricOldestStuckSecond, a.oldestStuck.Seconds(), k.typ, v)
		gauge(MetricLatePending, float64(a.pending), k.typ, v)
		gauge(MetricSupplements, float64(a.supplements), k.typ, v)
		gauge(MetricPublishedRecords, float64(a.records), k.typ, v)
	}

	youngest := map[string]time.Duration{}
	writers := map[[2]string]int{}
	for _, w := range r.Writers {
		age := r.Now.Sub(w.HeartbeatAt)
		if y, ok := youngest[w.Kind]; !ok || age < y {
			youngest[w.Kind] = age
		}
		liveness := "ended"
		switch {
		case w.Live:
			liveness = "live"
		case w.Stale:
			liveness = "stale"
		}
		writers[[2]string{w.Kind, liveness}]++
	}
	for kind, age := range youngest {
		gauge(MetricHeartbeatAge, age.Seconds(), kind)
	}
	for k, n := range writers {
		gauge(MetricWriters, float64(n), k[0], k[1])
	}
}
