package server

import (
	"github.com/lockstream/lockstream/keyservice"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"regexp"
)

type metrics struct {
	requests *prometheus.CounterVec   // method, code
	latency  *prometheus.HistogramVec // method
	keys     *prometheus.CounterVec   // method
	users    *prometheus.CounterVec   // method, status
	errors   *prometheus.CounterVec   // kind
	inflight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockstream_keys_requests_total", Help: "Key service RPCs by method and code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lockstream_keys_request_duration_seconds",
			Help:    "Key service RPC latency by method.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
		keys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockstream_keys_keys_served_total", Help: "Derived keys returned, by method.",
		}, []string{"method"}),
		users: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockstream_keys_users_total", Help: "Users or subjects answered, by method and status (ok, deleted, unknown).",
		}, []string{"method", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockstream_keys_errors_total", Help: "Failed RPCs by kind (unauthenticated, permission_denied, invalid_argument, overloaded, deadline, unavailable, not_found, failed_precondition, internal).",
		}, []string{"kind"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lockstream_keys_inflight_requests", Help: "RPCs being served.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.keys, m.users, m.errors, m.inflight)
	return m
}

// cacheCollector exports the service's cache counters:
// lockstream_keys_cache_requests_total{tier="process"|"memcached",result="hit"|"miss"|"error"}.
// Hit rate = rate(hit) / rate(hit+miss) per tier.
type cacheCollector struct {
	svc  *keyservice.Service
	desc *prometheus.Desc
}

func newCacheCollector(svc *keyservice.Service) *cacheCollector {
	return &cacheCollector{svc: svc, desc: prometheus.NewDesc("lockstream_keys_cache_requests_total",
		"Key service cache lookups by tier (process: in-memory keychains, user index and policies; memcached: the shared tier) and result (process renewed: misses on an expired entry answered without a store read, the row being unchanged in the embedded store).",
		[]string{"tier", "result"}, nil)}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.CacheStats()
	emit := func(tier, result string, n uint64) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), tier, result)
	}
	emit("process", "hit", st.ProcessHits)
	emit("process", "miss", st.ProcessMisses)
	emit("process", "renewed", st.ProcessRenewed)
	if st.Memcached {
		emit("memcached", "hit", st.MemcachedHits)
		emit("memcached", "miss", st.MemcachedMisses)
		emit("memcached", "error", st.MemcachedErrors)
	}
}

// registerRuntime adds the Go and process collectors to a fresh registry,
// with the GC's scan work (go_gc_scan_heap_bytes and friends: the pointerful
// memory each cycle must mark, which is what a cycle costs the tail) next
// to the default Go metrics.
func registerRuntime(reg prometheus.Registerer) {
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/scan/`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
