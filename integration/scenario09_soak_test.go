package integration

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
)

// soakDuration is $LOCKSTREAM_SOAK (a Go duration), default 10 minutes (CI
// runs the full soak; a developer may shorten it).
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("LOCKSTREAM_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("LOCKSTREAM_SOAK=%q: want a positive duration", v)
		}
		return d
	}
	return 10 * time.Minute
}

func rssKB() int64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// TestScenario09_Soak ingests from the Pub/Sub emulator for LOCKSTREAM_SOAK
// (10 min) at about half of the throughput measured first, with a real key
// server behind a memcached tier: RSS and goroutines stay flat after
// warm-up, the key server's p99 latency stays stable, and the output holds
// every event once.
func TestScenario09_Soak(t *testing.T) {
	soak := soakDuration(t)
	ctx, cancel := context.WithTimeout(context.Background(), soak+8*time.Minute)
	defer cancel()
	mc := storetest.Memcached(t)
	k := startScenarioKeyServer(t, server.Config{}, func(st keyservice.Store) keyservice.Store {
		tier, err := keyservice.NewMemcached(st, []string{mc}, keyservice.DefaultStaleWindow)
		if err != nil {
			t.Fatal(err)
		}
		tier.SetNamespace(t.Name())
		return tier
	})
	sub, publish, _ := scenarioPubSub(t, ctx, "soak")

	// Max throughput: a published backlog, drained.
	probe := synth.Generate(synth.Config{Events: 3000, Users: 300, Hours: 1, Seed: 900})
	probeSent := publish(probe.Messages)
	start := time.Now()
	// Its own root: the probe's drain closes the current hour there.
	if _, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: t.TempDir(), KeysURL: k.url(), IdleTimeout: 3 * time.Second, BatchSize: 200}); err != nil {
		t.Fatal(err)
	}
	maxRate := float64(len(probeSent)) / (time.Since(start) - 3*time.Second).Seconds()
	root := t.TempDir()
	rate := max(maxRate/2, 20)
	t.Logf("measured max %.0f messages/s; soaking %v at %.0f/s", maxRate, soak, rate)

	// The soak: a paced publisher (events of many users over several hours
	// of traffic), the ingest, and a sampler.
	traffic := synth.Generate(synth.Config{Events: int(rate*soak.Seconds()) + 100, Users: 5000, Hours: 1, Seed: 901})
	var published atomic.Int64
	pubDone := make(chan []record.Message, 1)
	go func() {
		var out []record.Message
		t0 := time.Now()
		for i := 0; i < len(traffic.Messages) && time.Since(t0) < soak; {
			due := min(len(traffic.Messages), int(rate*time.Since(t0).Seconds()))
			if due > i {
				out = append(out, publish(traffic.Messages[i:due])...)
				i = due
				published.Store(int64(i))
			}
			time.Sleep(200 * time.Millisecond)
		}
		pubDone <- out
	}()
	type sample struct {
		at         time.Duration
		rss        int64
		goroutines int
		p99        time.Duration
		calls      int
	}
	var samples []sample
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t0 := time.Now()
		for tick := time.NewTicker(30 * time.Second); time.Since(t0) < soak; <-tick.C {
			p99, n := k.latency.drain()
			runtime.GC()
			samples = append(samples, sample{time.Since(t0).Round(time.Second), rssKB(), runtime.NumGoroutine(), p99, n})
		}
	}()
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: root, KeysURL: k.url(), IdleTimeout: 20 * time.Second, BatchSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	sent := <-pubDone
	<-samplerDone
	for _, s := range samples {
		t.Logf("t=%v RSS %d MB, %d goroutines, key server p99 %v over %d RPCs", s.at, s.rss/1024, s.goroutines, s.p99, s.calls)
	}
	if len(samples) < 3 {
		t.Fatalf("only %d samples: soak too short to judge (LOCKSTREAM_SOAK=%v)", len(samples), soak)
	}
	warm, last := samples[1], samples[len(samples)-1]
	if last.rss > warm.rss*3/2+50*1024 {
		t.Errorf("RSS grew from %d MB (after warm-up) to %d MB", warm.rss/1024, last.rss/1024)
	}
	if last.goroutines > warm.goroutines+50 {
		t.Errorf("goroutines grew from %d to %d", warm.goroutines, last.goroutines)
	}
	if warm.p99 > 0 && last.p99 > 3*warm.p99+20*time.Millisecond {
		t.Errorf("key server p99 grew from %v to %v", warm.p99, last.p99)
	}
	if _, err := invariants.PublishAll(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	// Every user canary, and the first thousand per-event ones: the scan
	// is canaries x bytes.
	canaries := traffic.Canaries[:min(len(traffic.Canaries), 3*len(traffic.Users)+1000)]
	invariants.Require(t, ctx, invariants.Input{Scenario: "09-soak", Root: root, Sent: sent, Canaries: canaries,
		Logs: k.log.Bytes(), Ingest: res.Rows, NoDead: []string{record.ReasonKeyUnavailable}})
}
