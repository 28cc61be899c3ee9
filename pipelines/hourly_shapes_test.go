package pipelines

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestPublishShapesAgree: hourly publishes the same records, with the same
// accounting, whether one bundle reads every part file and writes the
// shards (up to transforms.DirectShards shards) or the records are
// shuffled to their shards (more), over the same raw hours with duplicates within and across
// them (the second hour's lookback).
func TestPublishShapesAgree(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tr := synth.Generate(synth.Config{Events: 1500, Users: 60, Hours: 2, Seed: 29})
	in := filepath.Join(dir, "in.ndjson")
	writeReplay(t, in, tr.Messages)
	first := filepath.Join(dir, "direct")
	if _, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: first, KeysURL: registerKeys(keyclient.NewFake()), BatchSize: 100}); err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(dir, "shuffled")
	if err := os.CopyFS(second, os.DirFS(first)); err != nil {
		t.Fatal(err)
	}
	type shape struct {
		root   string
		shards int
	}
	shapes := []shape{{first, transforms.DirectShards}, {second, transforms.DirectShards + 1}}
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	hours, dups, back := 0, int64(0), int64(0)
	for _, hr := range []time.Time{start, start.Add(time.Hour)} {
		b, err := blob.Open(ctx, first)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := RawHours(ctx, b, hr)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			var accounts []layout.Accounting
			var records [][]string
			for _, sh := range shapes {
				transforms.DropProcessCaches() // each shape reads its lookback from its own files
				res, err := Hourly(ctx, HourlyConfig{Root: sh.root, Type: h.Type, Version: h.Version, Hour: h.Hour, Shards: sh.shards})
				if err != nil {
					t.Fatal(err)
				}
				if res.State != StatePublished {
					t.Fatalf("%s, %d shards: state %s", h, sh.shards, res.State)
				}
				if n := len(res.Manifest.Files); n > sh.shards {
					t.Fatalf("%s: %d files for %d shards", h, n, sh.shards)
				}
				accounts = append(accounts, res.Manifest.Input)
				records = append(records, publishedRecords(t, sh.root, h))
			}
			a := accounts[0]
			if a != accounts[1] {
				t.Errorf("%s: accounting %+v from one bundle, %+v with a shuffle", h, accounts[0], accounts[1])
			}
			if !slices.Equal(records[0], records[1]) {
				t.Errorf("%s: %d records published from one bundle, %d with a shuffle, not the same", h, len(records[0]), len(records[1]))
			}
			if int64(len(records[0])) != a.Published || a.Published == 0 {
				t.Errorf("%s: %d records in the files, %d published", h, len(records[0]), a.Published)
			}
			dups += a.DuplicatesDropped
			back += a.LookbackDropped
			hours++
		}
	}
	if hours == 0 || dups == 0 || back == 0 {
		t.Fatalf("%d hours published, %d duplicates and %d lookback duplicates dropped: the traffic tests too little", hours, dups, back)
	}
}

// publishedRecords returns the records of a published hour, sorted.
func publishedRecords(t *testing.T, root string, h layout.Hour) []string {
	t.Helper()
	ctx := context.Background()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	d, err := dataset.ReadPublished(ctx, b, h)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range d.Files() {
		files = append(files, f.Name)
	}
	var out []string
	err = dataset.ReadRecords(ctx, b, h.Type, h.Version, files, func(_ []record.Column, _ *record.Layout, rec []byte) {
		out = append(out, string(rec))
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
