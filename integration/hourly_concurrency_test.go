package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/blob/gcstest"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/pipelines/hourlytest"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestHourlyConcurrentSinceRunsOnGCS: two `lockstream hourly --since`
// processes started together over the same gs:// root on fake-gcs-server
// (behind gcstest's precondition proxy), 3 hours of 2 types, 10 times on a
// fresh copy of the root: both exit 0, each hour is published by exactly
// one of them, nothing is deleted, every checksum verifies and every event
// is published once.
func TestHourlyConcurrentSinceRunsOnGCS(t *testing.T) {
	ctx := context.Background()
	const bucket = "lockstream-conc"
	srv := gcstest.Start(t, bucket)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host())
	bin := buildCLI(t)

	// One ingested root on a directory, copied to a new gs:// root for
	// every repetition.
	dir := t.TempDir()
	template := filepath.Join(dir, "template")
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	tr := synth.Generate(synth.Config{Start: start, Events: 1500, Users: 40, Hours: 3, Seed: 51})
	var lines []byte
	for _, m := range tr.Messages {
		l, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	keys := transforms.RegisterKeys("hourly-concurrency-gcs", keyclient.NewFake())
	if _, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{in}, Out: template, KeysURL: keys}); err != nil {
		t.Fatal(err)
	}
	tb, err := blob.Open(ctx, template)
	if err != nil {
		t.Fatal(err)
	}
	objects, err := tb.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var hours []layout.Hour
	for hr := start; hr.Before(start.Add(3 * time.Hour)); hr = hr.Add(time.Hour) {
		for _, typ := range []string{"AccountUpdate", "PlaybackEvent"} {
			hours = append(hours, layout.Hour{Type: typ, Version: 1, Hour: hr})
		}
	}

	for rep := range 10 {
		root := fmt.Sprintf("gs://%s/rep-%02d-%d", bucket, rep, time.Now().UnixNano())
		b, err := blob.Open(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range objects {
			data, err := blob.ReadAll(ctx, tb, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := blob.WriteAll(ctx, b, n, data); err != nil {
				t.Fatal(err)
			}
		}
		inputs, err := hourlytest.Inputs(ctx, b)
		if err != nil || len(inputs) == 0 {
			t.Fatalf("inputs: %v %v", inputs, err)
		}
		var outs, logs [2]bytes.Buffer
		var errs [2]error
		var wg sync.WaitGroup
		for i := range 2 {
			cmd := exec.Command(bin, "hourly", "--root", root, "--since", layout.FormatHour(start),
				"--until", layout.FormatHour(start.Add(3*time.Hour)), "--shards", "2")
			cmd.Stdout, cmd.Stderr = &outs[i], &logs[i]
			cmd.Env = append(os.Environ(), "GOOGLE_CLOUD_PROJECT=")
			wg.Go(func() { errs[i] = cmd.Run() })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("repetition %d, run %d: %v\n%s%s", rep, i, err, outs[i].String(), logs[i].String())
			}
		}
		published := map[string]int{}
		var byRun [2]int
		for i := range 2 {
			for _, l := range strings.Split(outs[i].String(), "\n") {
				fs := strings.Fields(l)
				if len(fs) > 3 && fs[0] != "TYPE" {
					if fs[3] != pipelines.StatePublished && fs[3] != pipelines.StateAlreadyPublished {
						t.Fatalf("repetition %d, run %d: %s", rep, i, l)
					}
					if fs[3] == pipelines.StatePublished {
						published[fs[0]+" "+fs[2]]++
						byRun[i]++
					}
				}
			}
		}
		for _, h := range hours {
			if n := published[h.Type+" "+layout.FormatHour(h.Hour)]; n != 1 {
				t.Fatalf("repetition %d: %s published %d times\nrun 0:\n%s%s\nrun 1:\n%s%s", rep, h, n,
					outs[0].String(), logs[0].String(), outs[1].String(), logs[1].String())
			}
		}
		counts, err := hourlytest.Check(ctx, b, hours)
		if err != nil {
			t.Fatalf("repetition %d: %v", rep, err)
		}
		if counts["AccountUpdate"]+counts["PlaybackEvent"] != tr.Unique {
			t.Fatalf("repetition %d: %v distinct events published, %d sent", rep, counts, tr.Unique)
		}
		after, err := hourlytest.Inputs(ctx, b)
		if err != nil || !slices.Equal(after, inputs) {
			t.Fatalf("repetition %d: inputs changed: %d before, %d after (%v)", rep, len(inputs), len(after), err)
		}
		t.Logf("repetition %d: run 0 published %d hours, run 1 %d", rep, byRun[0], byRun[1])
	}
}
