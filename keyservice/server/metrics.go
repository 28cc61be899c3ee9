package server

import (
	"github.com/lockstream/lockstream/keyservice"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"regexp"
	"runtime"
)

type metrics struct {
	requests *prometheus.CounterVec   // method, code
	latency  *prometheus.HistogramVec // method
	paths    *prometheus.HistogramVec // path: existing, create
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
		paths: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lockstream_keys_get_or_create_duration_seconds",
			Help:    "GetOrCreateKeys latency in the handler by path: existing (every keychain found, no store write) or create (the call created keychains or root keys of a new version: durable store writes).",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"path"}),
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
	reg.MustRegister(m.requests, m.latency, m.paths, m.keys, m.users, m.errors, m.inflight)
	return m
}

// registerBuildInfo exports lockstream_keys_build_info{version, go_version} 1:
// during a rollout, the versions serving and how many instances run each
// (join it on instance with the request and error series to compare them).
func registerBuildInfo(reg prometheus.Registerer, version string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lockstream_keys_build_info", Help: "Always 1; labels: the build version serving (--build-version or the binary's) and its Go version.",
	}, []string{"version", "go_version"})
	g.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(g)
}

// cacheCollector exports the service's cache counters:
// lockstream_keys_cache_requests_total{tier="process"|"memcached",result="hit"|"miss"|"error"}.
// Hit rate = rate(hit) / rate(hit+miss) per tier.
//
// and lockstream_keys_cache_rejected_total{reason="malformed"|"mac"|"replayed"|"future"}:
// entries memcached returned that failed authentication or their age
// check, and were read through to the store instead (any rate above zero
// means memcached or the network corrupts data, or something writes
// entries without the master key).
type cacheCollector struct {
	svc      *keyservice.Service
	desc     *prometheus.Desc
	rejected *prometheus.Desc
}

func newCacheCollector(svc *keyservice.Service) *cacheCollector {
	return &cacheCollector{svc: svc, desc: prometheus.NewDesc("lockstream_keys_cache_requests_total",
		"Key service cache lookups by tier (process: in-memory keychains, user index and policies; memcached: the shared tier) and result (process renewed: misses on an expired entry answered without a store read, the row being unchanged in the embedded store).",
		[]string{"tier", "result"}, nil),
		rejected: prometheus.NewDesc("lockstream_keys_cache_rejected_total",
			"memcached entries not used, by reason (malformed; mac: corrupt, forged, or of another key or namespace; replayed: older than memcached could keep it; future: read beyond the stale window ahead): each was read through to the store.",
			[]string{"reason"}, nil)}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.rejected }

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
		for i, n := range st.MemcachedRejected {
			ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(n), keyservice.RejectReasons[i])
		}
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
