package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
)

// The load benchmarks run our own bounded load generator against a real
// server on loopback (plain HTTP/1.1 + Connect protocol, binary protobuf;
// bolt store; warm caches). They print numbers; nothing here fails on time.
// Generator and server share the machine's cores.

const benchUsers = 10_000

var benchCats = []string{"location", "device"}

type benchEnv struct {
	url    string
	client keysv1connect.KeyServiceClient
	users  []string
}

var (
	benchOnce sync.Once
	benchE    *benchEnv
	benchMax  atomic.Int64 // RPC/s measured by the max-load run (for the 50% run)
)

func getBenchEnv(b *testing.B) *benchEnv {
	benchOnce.Do(func() {
		dir, err := benchTempDir()
		if err != nil {
			b.Fatal(err)
		}
		st, err := keyservice.OpenBolt(dir)
		if err != nil {
			b.Fatal(err)
		}
		svc, err := keyservice.New(st, keyservice.Options{MasterKey: masterKey(b), Categories: testCats})
		if err != nil {
			b.Fatal(err)
		}
		s, err := New(Config{Service: svc, Services: testServices(b), Audit: io.Discard,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConcurrent: 1024})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(s.Handler()) // lives for the whole benchmark process
		e := &benchEnv{url: srv.URL}
		e.client = keysv1connect.NewKeyServiceClient(keyclient.DefaultHTTPClient(), srv.URL, connect.WithInterceptors(bearer(secretWide)))
		for i := range benchUsers {
			e.users = append(e.users, fmt.Sprintf("bench-user-%06d", i))
		}
		// Warm: create every keychain (and fill the service's cache).
		for i := 0; i < benchUsers; i += 1000 {
			if _, err := e.client.GetOrCreateKeys(context.Background(), connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: e.users[i : i+1000], Categories: benchCats})); err != nil {
				b.Fatal(err)
			}
		}
		benchE = e
	})
	if benchE == nil {
		b.Fatal("bench setup failed")
	}
	return benchE
}

func benchTempDir() (string, error) {
	return osMkdirTemp("", "lockstream-keys-bench-")
}

func (e *benchEnv) batch(i, n int) []string {
	start := (i * n) % (benchUsers - n)
	return e.users[start : start+n]
}

func (e *benchEnv) call(ctx context.Context, users []string) error {
	resp, err := e.client.GetOrCreateKeys(ctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: users, Categories: benchCats}))
	if err != nil {
		return err
	}
	if len(resp.Msg.Results) != len(users) {
		return fmt.Errorf("%d results", len(resp.Msg.Results))
	}
	return nil
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
}

// closedLoop runs b.N calls from workers goroutines as fast as they go.
func closedLoop(b *testing.B, workers, batch int, e *benchEnv) (rate float64, lat []time.Duration) {
	lat = make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t := time.Now()
				if err := e.call(context.Background(), e.batch(i, batch)); err != nil {
					failed.Add(1)
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d calls failed", failed.Load())
	}
	return float64(b.N) / el.Seconds(), lat
}

// openLoop issues b.N calls at a fixed rate (at most maxInFlight
// outstanding); latency counts from the scheduled send time, so a stalled
// server is not hidden (no coordinated omission).
func openLoop(b *testing.B, rate float64, batch, maxInFlight int, e *benchEnv) (achieved float64, lat, svc []time.Duration, dropped int64) {
	lat = make([]time.Duration, 0, b.N)
	svc = make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	var drop atomic.Int64
	interval := time.Duration(float64(time.Second) / rate)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			drop.Add(1) // the generator is bounded: count what it could not send
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			sent := time.Now()
			err := e.call(context.Background(), e.batch(i, batch))
			d, s := time.Since(due), time.Since(sent)
			if err == nil {
				mu.Lock()
				lat, svc = append(lat, d), append(svc, s)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	return float64(len(lat)) / el.Seconds(), lat, svc, drop.Load()
}

// BenchmarkBatch100 measures batch-of-100 get-or-create lookups (2
// categories: 200 derived keys per RPC) at max load (closed loop, 16
// workers) and at 50% of that rate (open loop).
func BenchmarkBatch100(b *testing.B) {
	const batch = 100
	keysPerRPC := float64(batch * len(benchCats))
	b.Run("load=100%", func(b *testing.B) {
		e := getBenchEnv(b)
		rate, lat := closedLoop(b, 16, batch, e)
		benchMax.Store(int64(rate))
		b.ReportMetric(rate*keysPerRPC, "keys/s")
		b.ReportMetric(rate, "rpc/s")
		b.ReportMetric(percentile(lat, .50), "p50-ms")
		b.ReportMetric(percentile(lat, .99), "p99-ms")
	})
	b.Run("load=50%", func(b *testing.B) {
		e := getBenchEnv(b)
		maxRate := float64(benchMax.Load())
		if maxRate == 0 {
			maxRate = 1000
		}
		rate, lat, svc, dropped := openLoop(b, maxRate/2, batch, 256, e)
		b.ReportMetric(rate*keysPerRPC, "keys/s")
		b.ReportMetric(rate, "rpc/s")
		b.ReportMetric(percentile(lat, .50), "p50-ms")
		b.ReportMetric(percentile(lat, .99), "p99-ms")
		b.ReportMetric(float64(dropped), "dropped")
		// From the actual send, without the generator's own scheduling lag.
		b.ReportMetric(percentile(svc, .99), "p99-sent-ms")
		b.ReportMetric(percentile(lat, .90), "p90-ms")
	})
}

// BenchmarkSingleKey measures the one-user, one-category path.
func BenchmarkSingleKey(b *testing.B) {
	e := getBenchEnv(b)
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t := time.Now()
				_, err := e.client.GetOrCreateKeys(context.Background(), connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: e.users[i%benchUsers : i%benchUsers+1], Categories: benchCats[:1]}))
				if err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "keys/s")
	b.ReportMetric(percentile(lat, .50), "p50-ms")
	b.ReportMetric(percentile(lat, .99), "p99-ms")
}

// BenchmarkKeyclientRPCsPer10k: 10k distinct users looked up one at a time
// from 64 goroutines through one keyclient.Client over the server. The
// cold pass is measured once; "steady" is the RPCs per 10k lookups once the
// cache is warm (target <= 5).
func BenchmarkKeyclientRPCsPer10k(b *testing.B) {
	e := getBenchEnv(b)
	c, err := keyclient.NewRemote(e.url, keyclient.Options{Scope: scope, Secret: secretWide})
	if err != nil {
		b.Fatal(err)
	}
	pass := func() {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 64 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= benchUsers {
						return
					}
					if _, err := c.ForEncrypt(context.Background(), e.users[i:i+1], benchCats); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	start := time.Now()
	pass()
	cold := c.Stats().RPCs
	coldTime := time.Since(start)
	b.ResetTimer()
	before := c.Stats().RPCs
	start = time.Now()
	for range b.N {
		pass()
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(cold), "cold-rpcs/10k")
	b.ReportMetric(float64(benchUsers)/coldTime.Seconds(), "cold-lookups/s")
	b.ReportMetric(float64(c.Stats().RPCs-before)/float64(b.N), "steady-rpcs/10k")
	b.ReportMetric(float64(b.N*benchUsers)/el.Seconds(), "steady-lookups/s")
}

var osMkdirTemp = os.MkdirTemp
