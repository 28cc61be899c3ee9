package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lockstream/lockstream/keyclient"
)

// BenchmarkGetOrCreatePaths splits the server's get-or-create latency by
// path, batches of 100 users (2 categories) through the generated Connect
// client from 4 workers: "existing", keychains that exist (the service's
// caches and reads), and "create", users seen for the first time (two
// durable store writes per user, bolt's group commit). b.N calls per path;
// `make bench` runs BENCH_PATH_CALLS of each (the created users stay in the
// benchmark's store).
func BenchmarkGetOrCreatePaths(b *testing.B) {
	const batch = 100
	workers := 4
	if n, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_PATH_WORKERS")); err == nil && n > 0 {
		workers = n
	}
	var run atomic.Int64
	for _, path := range []string{"existing", "create"} {
		b.Run("path="+path, func(b *testing.B) {
			e := getBenchEnv(b)
			round := run.Add(1)
			users := func(i int) []string {
				if path == "existing" {
					return e.batch(i, batch)
				}
				ids := make([]string, batch)
				for j := range ids {
					ids[j] = fmt.Sprintf("bench-new-%d-%d-%03d", round, i, j)
				}
				return ids
			}
			r := runClosedLoop(b, workers, func(i int) error { return e.connectCall(context.Background(), users(i)) })
			if r.failed > 0 {
				b.Fatalf("%d calls failed", r.failed)
			}
			b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "rpc/s")
			b.ReportMetric(float64(b.N*batch)/r.elapsed.Seconds(), "users/s")
			b.ReportMetric(percentile(r.lat, .50), "p50-ms")
			b.ReportMetric(percentile(r.lat, .99), "p99-ms")
		})
	}
}

// BenchmarkKeyclientEndpoints measures keyclient over two endpoints of the
// key server (a MultiTransport; the second endpoint is a TCP relay to the
// same server, a group of its own) from 16 goroutines, each lookup a batch
// of 100 users (2 categories) with the client's cache off: every lookup is
// an RPC. Endpoint a is, in turn, up; refusing connections (a killed
// group: failover); and stalled (it accepts and never answers: hedging,
// then the health probe). Reports keys/s and the lookups' p50/p99.
func BenchmarkKeyclientEndpoints(b *testing.B) {
	const batch, workers = 100, 16
	e := getBenchEnv(b)
	relay := startRelay(b, e.url[len("http://"):])
	refused := closedAddr(b)
	stalled := startStalled(b)
	for _, tc := range []struct{ name, a string }{
		{"single", ""}, // one endpoint, no MultiTransport: the reference
		{"a=up", relay},
		{"a=refused", refused},
		{"a=stalled", stalled},
	} {
		b.Run(tc.name, func(b *testing.B) {
			urls := e.url
			if tc.a != "" {
				urls = "http://" + tc.a + "," + e.url
			}
			c, err := keyclient.Open(context.Background(), urls, keyclient.Options{Scope: scope, Secret: secretWide, CacheSize: -1, BatchWindow: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			r := runClosedLoop(b, workers, func(i int) error {
				_, err := c.ForEncrypt(context.Background(), e.batch(i, batch), benchCats)
				return err
			})
			if r.failed > 0 {
				b.Fatalf("%d lookups failed", r.failed)
			}
			b.ReportMetric(float64(b.N*batch*len(benchCats))/r.elapsed.Seconds(), "keys/s")
			b.ReportMetric(percentile(r.lat, .50), "p50-ms")
			b.ReportMetric(percentile(r.lat, .99), "p99-ms")
			if es, ok := c.EndpointStats(); ok {
				b.ReportMetric(float64(es.Hedges), "hedges")
				b.ReportMetric(float64(es.Failovers), "failovers")
				b.Logf("%s", es)
			}
		})
	}
}

// startRelay relays TCP connections from a new loopback port to target.
func startRelay(b *testing.B, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startStalled accepts connections and never answers (a hung group).
func startStalled(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().String()
}
