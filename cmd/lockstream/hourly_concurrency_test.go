package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/pipelines/hourlytest"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// hourlyChildEnv makes this test binary, started again by
// TestHourlyConcurrentSinceRuns, run `hourly --since` over the root it
// names (root|since|until) and exit with the command's exit code: two runs
// in two processes, as a scheduler starts them (prism's job server is one
// per process and not safe for two jobs submitted at once).
const hourlyChildEnv = "LOCKSTREAM_TEST_HOURLY_CHILD"

func concurrencyFlags(root, since, until string) hourlyFlags {
	return hourlyFlags{root: root, since: since, until: until, lookback: time.Hour, shards: 2,
		keyScope: transforms.DefaultKeyScope, supplementHorizon: defaultSupplementHorizon}
}

// TestHourlyConcurrentSinceRuns: two `hourly --since` processes started
// together over the same directory root (3 hours of 2 types, complete),
// 10 times on a fresh copy: both exit 0, each hour is published by
// exactly one of them, nothing is deleted, every checksum verifies and
// every event is published once.
func TestHourlyConcurrentSinceRuns(t *testing.T) {
	if args := os.Getenv(hourlyChildEnv); args != "" {
		a := strings.Split(args, "|")
		err := runHourly(context.Background(), os.Stdout, os.Stderr, concurrencyFlags(a[0], a[1], a[2]))
		if err != nil {
			fmt.Fprintln(os.Stderr, "lockstream:", err)
			os.Exit(exitCode(err))
		}
		os.Exit(0)
	}
	ctx := context.Background()
	dir := t.TempDir()
	template := filepath.Join(dir, "template")
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	tr := ingestSynth(t, template, synth.Config{Start: start, Events: 1500, Users: 40, Hours: 3, Seed: 41}, "")
	var hours []layout.Hour
	for hr := start; hr.Before(start.Add(3 * time.Hour)); hr = hr.Add(time.Hour) {
		for _, typ := range []string{"AccountUpdate", "PlaybackEvent"} {
			hours = append(hours, layout.Hour{Type: typ, Version: 1, Hour: hr})
		}
	}

	for rep := range 10 {
		root := filepath.Join(dir, fmt.Sprintf("rep-%02d", rep))
		copyTree(t, template, root)
		b, err := blob.Open(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		inputs, err := hourlytest.Inputs(ctx, b)
		if err != nil || len(inputs) == 0 {
			t.Fatalf("inputs: %v %v", inputs, err)
		}
		var outs, logs [2]bytes.Buffer
		var errs [2]error
		var wg sync.WaitGroup
		for i := range 2 {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHourlyConcurrentSinceRuns$", "-test.count=1")
			cmd.Env = append(os.Environ(), hourlyChildEnv+"="+strings.Join([]string{root, layout.FormatHour(start), layout.FormatHour(start.Add(3 * time.Hour))}, "|"))
			cmd.Stdout, cmd.Stderr = &outs[i], &logs[i]
			wg.Go(func() { errs[i] = cmd.Run() })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("repetition %d, run %d: %v\n%s%s", rep, i, err, outs[i].String(), logs[i].String())
			}
		}
		// Each (type, hour) published by one run; the other found it
		// published, or skipped it (lease held).
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
				t.Fatalf("repetition %d: %s published %d times\nrun 0:\n%s%s\nrun 1:\n%s%s", rep, h, n, outs[0].String(), logs[0].String(), outs[1].String(), logs[1].String())
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

// ingestSynth ingests synthetic traffic into root (a replay run, which
// completes the hours it wrote), every event id prefixed by prefix after
// "ev-" (so that two batches of traffic have distinct ids).
func ingestSynth(t *testing.T, root string, cfg synth.Config, prefix string) *synth.Traffic {
	t.Helper()
	tr := synth.Generate(cfg)
	var lines []byte
	for _, m := range tr.Messages {
		m.Data = bytes.ReplaceAll(m.Data, []byte(`"event_id":"ev-`), []byte(`"event_id":"ev-`+prefix))
		l, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	in := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	keys := transforms.RegisterKeys(fmt.Sprintf("hourly-test-%d", hourlyKeysSeq.Add(1)), keyclient.NewFake())
	if _, err := pipelines.Ingest(context.Background(), pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys}); err != nil {
		t.Fatal(err)
	}
	return tr
}

var hourlyKeysSeq atomic.Int64

// copyTree copies the files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
