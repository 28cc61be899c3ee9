package pipelines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/loadgen"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// BenchmarkPubSubIngest measures streaming ingest draining a Pub/Sub
// backlog with 1 and with N pull streams, on pstest (in the ingest's own
// process) and on the gcloud Pub/Sub emulator. As in BenchmarkEndToEnd,
// each measured ingest is a process of its own (this test binary, re-run
// for TestPubSubIngestBenchChild), so its peak RSS is its own; the backlog
// is published before the ingest starts (with the load generator of
// `lockstream publish`, package loadgen, on both backends), so the rate is
// the ingest's drain rate, not the publisher's. Keys come from the in-process fake key
// service behind the real keyclient (benchKeys).
//
// events/s is the backlog over the drain: from the first message handled
// to the last one acknowledged (the progress counters of package
// transforms), so neither the job's start (startup-s) nor the idle
// timeout that ends it counts. peak-rss-MB is the child's peak RSS from
// the start of the ingest on (VmHWM, reset after publishing). ratio-N/1 is
// N streams' events/s over one stream's, median of the rounds' ratios.
//
// pstest holds the backlog in the ingest's heap, so its peak is about
// twice rss-before-MB (the GC's heap goal) and says little about ingest:
// the emulator's peak is the ingest's own. pstest scans every message of
// the subscription under its one lock on every Pull and every 10 ms
// (O(backlog)), which bounds its rate; keep its backlog moderate. Each
// run's "round N:" line gives, per stream, the messages it pulled and when
// its first session started (from the first message on): how many of the
// N streams the runner ran at once. BENCHMARKS.md has the method and the
// measurements.
//
// Environment: LOCKSTREAM_BENCH_PUBSUB_EVENTS (pstest backlog in synthetic
// events, default 100k), LOCKSTREAM_BENCH_EMULATOR_EVENTS (emulator
// backlog, default 50k; 0 skips the emulator), LOCKSTREAM_BENCH_PUBSUB_STREAMS
// (default "1,4"; the first is the ratios' base), LOCKSTREAM_BENCH_PROFILE=DIR
// (each child's CPU profile). The emulator is the one of
// PUBSUB_EMULATOR_HOST, else one started from the gcloud SDK, else that
// part is skipped.
func BenchmarkPubSubIngest(b *testing.B) {
	streams := pubsubBenchStreams(b)
	b.Run("pstest", func(b *testing.B) {
		benchPubSub(b, "pstest", envInt(pubsubEventsEnv, 100_000), streams)
	})
	b.Run("emulator", func(b *testing.B) {
		events := envInt(emulatorEventsEnv, 50_000)
		if events == 0 {
			b.Skip("emulator: LOCKSTREAM_BENCH_EMULATOR_EVENTS=0")
		}
		if os.Getenv("PUBSUB_EMULATOR_HOST") == "" {
			if _, err := storetest.PubSubEmulatorPath(); err != nil {
				fmt.Printf("emulator: PUBSUB_EMULATOR_HOST not set and %v\n", err)
				b.Skip("emulator: PUBSUB_EMULATOR_HOST not set")
			}
		}
		storetest.PubSubEmulator(b)
		benchPubSub(b, "emulator", events, streams)
	})
}

// Environment of BenchmarkPubSubIngest and its children (which also get
// benchRootEnv and benchRoundEnv, and benchProfileEnv if set).
const (
	pubsubChildEnv    = "LOCKSTREAM_BENCH_PUBSUB_CHILD"    // pstest or emulator
	pubsubStreamsEnv  = "LOCKSTREAM_BENCH_PUBSUB_STREAMS"  // pull streams (in the child: one number)
	pubsubEventsEnv   = "LOCKSTREAM_BENCH_PUBSUB_EVENTS"   // pstest: synthetic events to publish
	emulatorEventsEnv = "LOCKSTREAM_BENCH_EMULATOR_EVENTS" // emulator: synthetic events to publish
	pubsubSubEnv      = "LOCKSTREAM_BENCH_PUBSUB_SUB"      // emulator: the subscription with the backlog
	pubsubCountEnv    = "LOCKSTREAM_BENCH_PUBSUB_COUNT"    // emulator: messages in its backlog
	pubsubResultEnv   = "LOCKSTREAM_BENCH_PUBSUB_RESULT"   // the child writes its pubsubRun (JSON) there
)

// pubsubIdle is the ingest's idle timeout: it ends the job once the
// backlog is drained (not part of any figure).
const pubsubIdle = 3 * time.Second

// pubsubRun is what one ingest child measured.
type pubsubRun struct {
	Messages  int           // the backlog
	Publish   time.Duration // publishing it (pstest, in the child; not measured)
	Startup   time.Duration // Ingest called -> first message handled
	Drain     time.Duration // first message handled -> last one acknowledged
	Wall      time.Duration // Ingest called -> returned (idle timeout included)
	CPU       time.Duration // the process's CPU time over the drain
	Handled   int64         // messages handled (more than Messages: redeliveries)
	RSSBefore int64         // kB, when the ingest started
	Peak      int64         // kB, from the ingest's start on
	PerStream []int64       // messages pulled by each stream (its writer record)
	// Started is when each stream's first session started, from the first
	// message handled on (negative: before it).
	Started []time.Duration
}

func (r pubsubRun) rate() float64 { return float64(r.Messages) / r.Drain.Seconds() }

func (r pubsubRun) String() string {
	started := make([]string, len(r.Started))
	for i, d := range r.Started {
		started[i] = fmt.Sprintf("%.1f", d.Seconds())
	}
	return fmt.Sprintf("%d messages in %.2f s: %.0f events/s (startup %.2f s, job %.1f s, %.2f cores, peak RSS %d MB, %d MB before; %d redelivered; pulled per stream %v, started at [%s] s; generated and published in %.1f s)",
		r.Messages, r.Drain.Seconds(), r.rate(), r.Startup.Seconds(), r.Wall.Seconds(), r.CPU.Seconds()/r.Drain.Seconds(), r.Peak>>10, r.RSSBefore>>10,
		r.Handled-int64(r.Messages), r.PerStream, strings.Join(started, " "), r.Publish.Seconds())
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n >= 0 {
		return n
	}
	return def
}

// pubsubBenchStreams is the streams settings: LOCKSTREAM_BENCH_PUBSUB_STREAMS
// or 1 and transforms.DefaultPullStreams. The first is the ratios' base.
func pubsubBenchStreams(b *testing.B) []int {
	v := os.Getenv(pubsubStreamsEnv)
	if v == "" {
		return []int{1, transforms.DefaultPullStreams}
	}
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > transforms.MaxPullStreams || slices.Contains(out, n) {
			b.Fatalf("%s=%q: want distinct stream counts in 1..%d, comma-separated", pubsubStreamsEnv, v, transforms.MaxPullStreams)
		}
		out = append(out, n)
	}
	return out
}

// benchPubSub runs rounds of one ingest per streams setting on backend
// and reports each setting's median.
func benchPubSub(b *testing.B, backend string, events int, streams []int) {
	dir := b.TempDir()
	runs := map[int][]pubsubRun{}
	ratios := map[int][]float64{}
	measure := func(round string, n, events int) pubsubRun {
		root := filepath.Join(dir, fmt.Sprintf("s%d-%s", n, round))
		if backend == "pstest" {
			return measurePubSub(b, backend, round, n, root, pubsubEventsEnv+"="+strconv.Itoa(events))
		}
		t0 := time.Now()
		sub, count, drop := publishEmulatorBacklog(b, events, fmt.Sprintf("bench-s%d-%s-%d", n, round, time.Now().UnixNano()))
		defer drop()
		published := time.Since(t0)
		r := measurePubSub(b, backend, round, n, root, pubsubSubEnv+"="+sub, pubsubCountEnv+"="+strconv.Itoa(count))
		r.Publish = published
		return r
	}
	if backend == "emulator" {
		// A fresh emulator (a JVM) drained each of its first few backlogs
		// faster than the last (1 stream, 53k messages: 9k, 14k, 20k, then
		// ~25k msg/s), which would favour whichever setting ran later. An
		// untimed ingest of twice the backlog warms it up.
		b.Logf("warm-up: %s", measure("warm", slices.Max(streams), 2*events))
	}
	for i := 0; b.Loop(); i++ {
		round := strconv.Itoa(i)
		// Every other round runs the settings in reverse, so that a drift
		// (of the machine's load, of the emulator) favours none.
		order := slices.Clone(streams)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		rates := map[int]float64{}
		var lines []string
		for _, n := range order {
			syscall.Sync()
			// The machine's load: a benchmark shares it with whatever else runs.
			load := "?"
			if data, err := os.ReadFile("/proc/loadavg"); err == nil {
				load = strings.Join(strings.Fields(string(data))[:3], " ")
			}
			r := measure(round, n, events)
			lines = append(lines, fmt.Sprintf("round %s: %s streams=%d: %s; load average before: %s", round, backend, n, r, load))
			runs[n] = append(runs[n], r)
			rates[n] = r.rate()
		}
		// One line per run, the round's ratios on its last (the testing
		// package keeps 10 lines of a benchmark's log).
		for _, n := range streams[1:] {
			ratios[n] = append(ratios[n], rates[n]/rates[streams[0]])
			lines[len(lines)-1] += fmt.Sprintf("; ratio %d/%d streams %.2f", n, streams[0], rates[n]/rates[streams[0]])
		}
		for _, l := range lines {
			b.Log(l)
		}
	}
	for _, n := range streams {
		var rate, peak, before, startup []float64
		for _, r := range runs[n] {
			rate = append(rate, r.rate())
			peak = append(peak, float64(r.Peak>>10))
			before = append(before, float64(r.RSSBefore>>10))
			startup = append(startup, r.Startup.Seconds())
		}
		s := fmt.Sprintf("streams%d-", n)
		b.ReportMetric(median(rate), s+"events/s")
		b.ReportMetric(median(peak), s+"peak-rss-MB")
		b.ReportMetric(median(startup), s+"startup-s")
		if backend == "pstest" {
			b.ReportMetric(median(before), s+"rss-before-MB")
		}
		if len(ratios[n]) > 0 {
			b.ReportMetric(median(ratios[n]), fmt.Sprintf("ratio-%d/%d", n, streams[0]))
		}
	}
	b.ReportMetric(float64(runs[streams[0]][0].Messages), "messages")
}

// publishEmulatorBacklog creates a topic and subscription in a project of
// their own on the emulator, publishes the synthetic traffic of events
// events to it and returns the subscription, the message count and a
// function that deletes both (an emulator of PUBSUB_EMULATOR_HOST outlives
// the benchmark).
func publishEmulatorBacklog(b *testing.B, events int, project string) (sub string, count int, drop func()) {
	ctx := context.Background()
	msgs := pubsubTraffic(events)
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		b.Fatal(err)
	}
	topic := "projects/" + project + "/topics/events"
	sub = "projects/" + project + "/subscriptions/ingest"
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		b.Fatal(err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 60}); err != nil {
		b.Fatal(err)
	}
	if err := publishBacklog(ctx, client, topic, msgs); err != nil {
		b.Fatalf("publish to the emulator: %v", err)
	}
	drop = func() {
		defer client.Close()
		if err := client.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: sub}); err != nil {
			b.Fatal(err)
		}
		if err := client.TopicAdminClient.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: topic}); err != nil {
			b.Fatal(err)
		}
	}
	return sub, len(msgs), drop
}

// publishBacklog publishes msgs to topic with the load generator of
// `lockstream publish` (unpaced: as fast as Pub/Sub takes them).
func publishBacklog(ctx context.Context, client *pubsub.Client, topic string, msgs []record.Message) error {
	pub := client.Publisher(topic)
	pub.PublishSettings.CountThreshold = pubsub.MaxPublishRequestCount
	pub.PublishSettings.ByteThreshold = 4 << 20
	pub.PublishSettings.DelayThreshold = 20 * time.Millisecond
	defer pub.Stop()
	sum, err := loadgen.Run(ctx, pub, loadgen.Messages(msgs), loadgen.Config{})
	if err != nil {
		return err
	}
	if sum.Errors > 0 {
		return fmt.Errorf("%d of %d publishes failed (first: %v)", sum.Errors, sum.Messages(), sum.FirstError)
	}
	return nil
}

// pubsubTraffic is the benchmark's synthetic traffic: events unique events
// of events/20 users, with the usual duplicates and malformed messages
// (dead-lettered); the hour is the publish time.
func pubsubTraffic(events int) []record.Message {
	return synth.Generate(synth.Config{Events: events, Users: max(events/20, 10), Hours: 1, Seed: 23}).Messages
}

// measurePubSub runs one ingest in a child process; its failure ends the
// benchmark.
func measurePubSub(b *testing.B, backend, round string, streams int, root string, env ...string) pubsubRun {
	result := root + ".json"
	cmd := exec.Command(os.Args[0], "-test.run=^TestPubSubIngestBenchChild$", "-test.count=1", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), append(env, pubsubChildEnv+"="+backend, pubsubStreamsEnv+"="+strconv.Itoa(streams),
		benchRootEnv+"="+root, benchRoundEnv+"="+round, pubsubResultEnv+"="+result)...)
	out, err := cmd.CombinedOutput() // prism's log; shown only when the child fails
	if err != nil {
		if len(out) > 8<<10 {
			out = out[len(out)-8<<10:]
		}
		b.Fatalf("%s streams=%d (round %s): %v; the end of its output:\n%s", backend, streams, round, err, out)
	}
	data, err := os.ReadFile(result)
	if err != nil {
		b.Fatalf("%s streams=%d: its result: %v", backend, streams, err)
	}
	var r pubsubRun
	if err := json.Unmarshal(data, &r); err != nil {
		b.Fatalf("%s streams=%d: its result %q: %v", backend, streams, data, err)
	}
	return r
}

// TestPubSubIngestBenchChild is not a test: it is the process of one
// measured ingest of BenchmarkPubSubIngest (the os/exec TestHelperProcess
// pattern), and skips unless the benchmark started it.
func TestPubSubIngestBenchChild(t *testing.T) {
	backend := os.Getenv(pubsubChildEnv)
	if backend == "" {
		t.Skip("the child process of BenchmarkPubSubIngest; runs only when the benchmark starts it")
	}
	r, err := runPubSubChild(t, backend)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv(pubsubResultEnv), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func runPubSubChild(t *testing.T, backend string) (pubsubRun, error) {
	ctx := context.Background()
	root, round := os.Getenv(benchRootEnv), os.Getenv(benchRoundEnv)
	streams, _ := strconv.Atoi(os.Getenv(pubsubStreamsEnv))
	var r pubsubRun
	var sub string
	switch backend {
	case "pstest":
		srv := pstest.NewServer()
		defer srv.Close()
		t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
		topic := "projects/p/topics/events"
		sub = "projects/p/subscriptions/ingest"
		if _, err := srv.GServer.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
			return r, err
		}
		if _, err := srv.GServer.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 60}); err != nil {
			return r, err
		}
		t0 := time.Now()
		msgs := pubsubTraffic(envInt(pubsubEventsEnv, 0))
		client, err := pubsub.NewClient(ctx, "p")
		if err != nil {
			return r, err
		}
		err = publishBacklog(ctx, client, topic, msgs)
		client.Close()
		if err != nil {
			return r, err
		}
		r.Messages, r.Publish = len(msgs), time.Since(t0)
	case "emulator":
		sub = os.Getenv(pubsubSubEnv)
		r.Messages = envInt(pubsubCountEnv, 0)
	default:
		return r, fmt.Errorf("unknown backend %q", backend)
	}
	if r.Messages == 0 {
		return r, errors.New("no backlog")
	}
	// The peak from here on is the ingest's (and, on pstest, the fake's
	// copy of the backlog, which is in RSSBefore).
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return r, fmt.Errorf("reset the peak RSS: %w", err)
	}
	// Just reset, the peak is the RSS now.
	var err error
	if r.RSSBefore, err = peakKB(); err != nil {
		return r, err
	}
	kc, err := benchKeys()
	if err != nil {
		return r, err
	}
	if dir := os.Getenv(benchProfileEnv); dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("pubsub-%s-streams%d-%s.pprof", backend, streams, round)))
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
		defer pprof.StopCPUProfile()
	}

	// The poller notes when the first message is handled and when the
	// backlog's last one is acknowledged, with the process's CPU time.
	t0 := time.Now()
	var first, last time.Time
	var cpuFirst, cpuLast time.Duration
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				p := transforms.ReadProgress()
				if first.IsZero() && p.Messages > 0 {
					first, cpuFirst = now, processCPU()
				}
				if p.Acked >= int64(r.Messages) {
					last, cpuLast = now, processCPU()
					return
				}
			}
		}
	})
	ing, err := Ingest(ctx, IngestConfig{Subscription: sub, Out: root, KeysURL: registerKeys(kc), Streams: streams, IdleTimeout: pubsubIdle})
	r.Wall = time.Since(t0)
	close(done)
	wg.Wait()
	if err != nil {
		return r, err
	}
	p := transforms.ReadProgress()
	if last.IsZero() {
		return r, fmt.Errorf("ingest returned with %d of %d messages acknowledged", p.Acked, r.Messages)
	}
	r.Startup, r.Drain, r.CPU, r.Handled = first.Sub(t0), last.Sub(first), cpuLast-cpuFirst, p.Messages
	if tot := ing.Totals(); tot.In < int64(r.Messages) {
		return r, fmt.Errorf("ingest accounting saw %d of %d messages", tot.In, r.Messages)
	}
	bk, err := blob.Open(ctx, root)
	if err != nil {
		return r, err
	}
	recs, err := completion.Load(ctx, bk)
	if err != nil {
		return r, err
	}
	slices.SortFunc(recs, func(a, b *completion.Record) int { return strings.Compare(a.Part, b.Part) })
	for _, rec := range recs {
		if rec.RunID == ing.RunID && strings.HasPrefix(rec.Part, "stream-") {
			r.PerStream = append(r.PerStream, rec.Pulled)
			r.Started = append(r.Started, rec.StartedAt.Sub(first))
		}
	}
	r.Peak, err = peakKB()
	return r, err
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakKB is this process's peak RSS (VmHWM) in kB.
func peakKB() (int64, error) {
	kb, err := peakRSS()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(kb, 10, 64)
}
