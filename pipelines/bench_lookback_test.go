package pipelines

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// BenchmarkHourlyLookback measures how the lookback ids reach hourly's
// shards: an hour's publication drops the event ids already published in
// the hour before, which it takes from this process's record of the
// dataset files it wrote (transforms' env: on prism, and for hourly
// --watch, the previous hour was published by the same process), or, when
// the process did not write them (a new worker, or after
// transforms.DropProcessCaches), by reading and decoding those files. Per
// round it publishes the second of two hours both ways, on two roots of
// the same traffic, and reports the seconds of each (medians) and their
// ratio. LOCKSTREAM_BENCH_LOOKBACK_EVENTS sets the events of the two hours
// (default 200000).
func BenchmarkHourlyLookback(b *testing.B) {
	events := 200_000
	if n, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_LOOKBACK_EVENTS")); err == nil && n > 0 {
		events = n
	}
	ctx := context.Background()
	dir := b.TempDir()
	tr := synth.Config{Events: events, Users: 5000, Hours: 2, Seed: 11}
	in := synthReplay(b, dir, tr)
	h0 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	keys := registerKeys(keyclient.NewFake())
	var cached, read []float64
	b.ResetTimer()
	for i := range b.N {
		for _, fromStorage := range []bool{false, true} {
			root := filepath.Join(dir, fmt.Sprintf("root-%d-%v", i, fromStorage))
			if _, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys}); err != nil {
				b.Fatal(err)
			}
			cfg := HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h0}
			if _, err := Hourly(ctx, cfg); err != nil {
				b.Fatal(err)
			}
			if fromStorage {
				transforms.DropProcessCaches()
			}
			cfg.Hour = h0.Add(time.Hour)
			start := time.Now()
			res, err := Hourly(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(start).Seconds()
			if fromStorage {
				read = append(read, d)
			} else {
				cached = append(cached, d)
			}
			b.Logf("round %d, lookback ids %s: second hour published in %.2f s (%d records, %d dropped as published the hour before)",
				i, map[bool]string{false: "from the process", true: "read from storage"}[fromStorage], d, res.Manifest.Records, res.Manifest.Input.LookbackDropped)
		}
	}
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(median(cached), "hourly-lookback-cached-s")
	b.ReportMetric(median(read), "hourly-lookback-read-s")
	b.ReportMetric(median(read)/median(cached), "read-over-cached")
}
