package pipelines

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// The pass-through baseline has the shape of ingest + hourly — the same
// replay source, the same reshuffle of batches, files per batch, one
// shuffle per event keyed by a hash, one file per shard, its last stage
// ended like hourly's (transforms.EndBranch) — without validation,
// encryption or Avro.

func init() {
	register.DoFn3x1[context.Context, transforms.Batch, func(string), error](&passWriteFn{})
	register.DoFn3x1[context.Context, string, func(int, []byte), error](&passReadFn{})
	register.DoFn4x1[context.Context, int, func(*[]byte) bool, func(string), error](&passShardFn{})
}

type passWriteFn struct{ Root string }

func (fn *passWriteFn) ProcessElement(ctx context.Context, b transforms.Batch, emit func(string)) error {
	bk, err := blob.Open(ctx, fn.Root)
	if err != nil {
		return err
	}
	w, err := bk.Create(ctx, "pass/"+b.ID)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	for _, m := range b.Messages {
		bw.WriteString(m.ID)
		bw.WriteByte('\t')
		bw.Write(m.Data)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	emit("pass/" + b.ID)
	return nil
}

type passReadFn struct {
	Root   string
	Shards int
}

func (fn *passReadFn) ProcessElement(ctx context.Context, name string, emit func(int, []byte)) error {
	bk, err := blob.Open(ctx, fn.Root)
	if err != nil {
		return err
	}
	data, err := blob.ReadAll(ctx, bk, name)
	if err != nil {
		return err
	}
	// Like transforms.Publish: one element per (file, shard), not per line.
	batches := make([][]byte, fn.Shards)
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		id, _, _ := strings.Cut(line, "\t")
		h := fnv.New32a()
		h.Write([]byte(id))
		sh := int(h.Sum32() % uint32(fn.Shards))
		batches[sh] = append(append(batches[sh], line...), '\n')
	}
	for sh, b := range batches {
		if len(b) > 0 {
			emit(sh, b)
		}
	}
	return nil
}

type passShardFn struct{ Root string }

func (fn *passShardFn) ProcessElement(ctx context.Context, shard int, lines func(*[]byte) bool, emit func(string)) error {
	bk, err := blob.Open(ctx, fn.Root)
	if err != nil {
		return err
	}
	w, err := bk.Create(ctx, "passout/"+strconv.Itoa(shard))
	if err != nil {
		return err
	}
	var l []byte
	for lines(&l) {
		w.Write(l) // a batch of newline-terminated lines
	}
	if err := w.Close(); err != nil {
		return err
	}
	emit("passout/" + strconv.Itoa(shard))
	return nil
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

func vmHWM() string {
	data, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	return "?"
}

// BenchmarkEndToEnd runs ingest + hourly on prism over synthetic traffic
// (LOCKSTREAM_BENCH_EVENTS, default 200k; `make bench BENCH_EVENTS=1000000`
// for the 1M figure), against the pass-through baseline in the same run.
// Keys come from an in-process fake service behind the real keyclient, so
// the key service itself is not measured here (keyservice/server has its
// own load benchmark).
func BenchmarkEndToEnd(b *testing.B) {
	ctx := context.Background()
	n := benchEvents()
	dir := b.TempDir()
	tr := synth.Generate(synth.Config{Events: n, Users: max(n/20, 10), Hours: 3, Seed: 11})
	in := filepath.Join(dir, "in.ndjson")
	writeReplay(b, in, tr.Messages)
	count := len(tr.Messages)
	msgs := float64(count)
	// The traffic is in the file now: kept live, its million messages would
	// be marked by every GC cycle of both pipelines.
	tr = nil
	runtime.GC()
	var pass, real, ingestT, ingestCPU, hourlyCPU time.Duration
	for i := 0; b.Loop(); i++ {
		// Baseline.
		proot := filepath.Join(dir, fmt.Sprintf("pass-%d", i))
		t0 := time.Now()
		p, s := beam.NewPipelineWithRoot()
		batches := transforms.ReadReplay(s, transforms.ReplayConfig{Files: []string{in}, BatchSize: DefaultReplayBatchSize, RunID: fmt.Sprintf("pass%d", i), Fallback: time.Now()})
		names := beam.ParDo(s, &passWriteFn{Root: proot}, beam.Reshuffle(s, batches))
		keyed := beam.ParDo(s, &passReadFn{Root: proot, Shards: DefaultShards}, beam.Reshuffle(s, names))
		transforms.EndBranch(s, beam.ParDo(s, &passShardFn{Root: proot}, beam.GroupByKey(s, keyed)))
		if _, err := beamx.RunWithMetrics(ctx, p); err != nil {
			b.Fatal(err)
		}
		pass += time.Since(t0)

		// lockstream: ingest, then hourly for every (type, hour).
		root := filepath.Join(dir, fmt.Sprintf("real-%d", i))
		t0 = time.Now()
		// The fake key service behind the real client (batching, cache), as
		// pipelines use it in production.
		kc, err := keyclient.New(keyclient.NewFake(), keyclient.Options{Scope: transforms.DefaultKeyScope})
		if err != nil {
			b.Fatal(err)
		}
		cpu0 := cpuTime()
		ing, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: root, KeysURL: registerKeys(kc)})
		if err != nil {
			b.Fatal(err)
		}
		ingestT += time.Since(t0)
		ingestCPU += cpuTime() - cpu0
		cpu0 = cpuTime()
		if tot := ing.Totals(); tot.In != int64(count) {
			// Ingest's table comes from runner metrics; say so when they drift.
			b.Errorf("ingest accounting saw %d of %d messages", tot.In, count)
		}
		bk, err := blob.Open(ctx, root)
		if err != nil {
			b.Fatal(err)
		}
		var cfgs []HourlyConfig
		for hr := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC); hr.Before(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)); hr = hr.Add(time.Hour) {
			hs, err := RawHours(ctx, bk, hr)
			if err != nil {
				b.Fatal(err)
			}
			for _, h := range hs {
				cfgs = append(cfgs, HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour})
			}
		}
		for _, o := range HourlyMany(ctx, cfgs) {
			if o.Err != nil {
				b.Fatal(o.Err)
			}
		}
		real += time.Since(t0)
		hourlyCPU += cpuTime() - cpu0
	}
	runs := float64(b.N)
	b.ReportMetric(msgs*runs/real.Seconds(), "events/s")
	b.ReportMetric(msgs*runs/pass.Seconds(), "baseline-events/s")
	b.ReportMetric(real.Seconds()/pass.Seconds(), "ratio")
	b.ReportMetric(ingestT.Seconds()/runs, "ingest-s")
	b.ReportMetric((real-ingestT).Seconds()/runs, "hourly-s")
	b.ReportMetric(pass.Seconds()/runs, "baseline-s")
	// CPU time of the process over wall time: 2.0 would be both cores busy.
	b.ReportMetric(ingestCPU.Seconds()/ingestT.Seconds(), "ingest-cores")
	b.ReportMetric(hourlyCPU.Seconds()/(real-ingestT).Seconds(), "hourly-cores")
	b.Logf("%d messages per run; peak RSS of the benchmark process (both pipelines): %s", count, vmHWM())
}
