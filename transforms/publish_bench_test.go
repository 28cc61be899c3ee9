package transforms

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyclient/keyclienttest"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
)

// BenchmarkPublishShards is one hour's publication without Beam: the
// direct shape with four shards (publishFn, as hourly runs by default)
// over the raw part files of one hour of PlaybackEvent v3
// (LOCKSTREAM_BENCH_EVENTS events, default 200k, one user in twenty, 5%
// duplicates), in batches of 5000 as ingest writes them. "crypto" reads
// encrypted records, "no-crypto" the same events with every category
// revoked (PII null): their difference is what the bigger records cost
// hourly. cpu-ns/record is the process's CPU (the collector's too) over
// records read, ns/record the wall time.
func BenchmarkPublishShards(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	hour := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tr := synth.Generate(synth.Config{Start: hour, Hours: 1, Events: n, Users: max(n/20, 10), Seed: 5, PlaybackVersion: 3})
	reg, err := schemas.Embedded()
	if err != nil {
		b.Fatal(err)
	}
	const typ, version, shards = "PlaybackEvent", 3, 4
	s, err := reg.Lookup(typ, version)
	if err != nil {
		b.Fatal(err)
	}
	kc, err := keyclient.New(keyclient.NewFake(), keyclient.Options{Scope: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	type input struct {
		name    string
		fn      *publishFn
		records int
	}
	var inputs []input
	for _, c := range []struct {
		name string
		keys record.Keys
	}{{"crypto", kc}, {"no-crypto", keyclienttest.Revoked{}}} {
		root := b.TempDir()
		bucket, err := blob.Open(context.Background(), root)
		if err != nil {
			b.Fatal(err)
		}
		a, err := record.NewAnonymizer(reg, c.keys, record.Options{})
		if err != nil {
			b.Fatal(err)
		}
		var parts []string
		records := 0
		for rest, batch := tr.Messages, 0; len(rest) > 0; batch++ {
			msgs := rest[:min(5000, len(rest))]
			rest = rest[len(msgs):]
			outs, err := a.Anonymize(context.Background(), msgs)
			if err != nil {
				b.Fatal(err)
			}
			var recs [][]byte
			for _, o := range outs {
				if o.Reject == nil && o.EventType == typ && o.Version == version && o.Hour.Equal(hour) {
					recs = append(recs, o.Record)
				}
			}
			name := RawPartName(typ, version, hour, "bench-"+strconv.Itoa(batch))
			if err := writeOCF(context.Background(), bucket, name, s.Encrypted().JSON, recs, false); err != nil {
				b.Fatal(err)
			}
			parts = append(parts, name)
			records += len(recs)
		}
		fn := &publishFn{
			R:     partReader{Root: root, Type: typ, Version: version, Shards: shards},
			W:     shardWriter{Root: root, Type: typ, Version: version, HourMillis: hour.UnixMilli(), RunID: "bench", Part: layout.MainPart, Shards: shards},
			Parts: parts,
		}
		if err := fn.Setup(context.Background()); err != nil {
			b.Fatal(err)
		}
		inputs = append(inputs, input{c.name, fn, records})
	}
	// The messages are not kept while measuring: the collector would mark
	// them on every cycle.
	tr = nil
	for _, in := range inputs {
		fn, records := in.fn, in.records
		b.Run(in.name, func(b *testing.B) {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			cpu0, alloc0 := processCPU(b), ms.TotalAlloc
			runs := 0
			for b.Loop() {
				if err := fn.ProcessElement(context.Background(), nil, func(string) {}); err != nil {
					b.Fatal(err)
				}
				runs++
			}
			runtime.ReadMemStats(&ms)
			read := float64(runs * records)
			b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/read, "cpu-ns/record")
			b.ReportMetric(float64(ms.TotalAlloc-alloc0)/read, "B/record")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/read, "ns/record")
		})
	}
}

// processCPU is the CPU the process has used (user and system, every
// thread).
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
