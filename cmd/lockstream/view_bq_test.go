package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
)

// TestViewIntoBigQueryWithExpiration: view --bigquery-table writes the
// decrypted copy as Avro and loads it into a restricted table that expires
// (--expiration); a re-run refreshes the expiration and replaces the rows.
func TestViewIntoBigQueryWithExpiration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys := "local:" + filepath.Join(dir, "keys")
	if out, err := runCLI(t, ctx, "", "keys", "init", "--keys", keys); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	tr := synth.Generate(synth.Config{Events: 120, Users: 8, Hours: 1, Seed: 9})
	var lines []byte
	for _, m := range tr.Messages {
		l, _ := m.MarshalLine()
		lines = append(append(lines, l...), '\n')
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if _, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys}); err != nil {
		t.Fatal(err)
	}
	hour := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	if _, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: hour}); err != nil {
		t.Fatal(err)
	}
	srv := bqtest.NewServer(t)
	out := filepath.Join(dir, "pb.avro")
	args := []string{"view", "--root", root, "--hour", "2026-11-23T06", "--type", "PlaybackEvent", "--out", out, "--keys", keys,
		"--bigquery-table", "restricted.pb_06", "--expiration", "2h", "--project", "lockstream-test", "--bigquery-endpoint", srv.URL}
	for run := range 2 {
		srv.Reset()
		start := time.Now()
		got, err := runCLI(t, ctx, "", args...)
		if err != nil || !strings.Contains(got, "into lockstream-test:restricted.pb_06") {
			t.Fatalf("run %d: %v\n%s", run, err, got)
		}
		wantOps := []string{"tables.get", "tables.insert", "jobs.insert", "jobs.get"}
		if run == 1 {
			wantOps[1] = "tables.patch"
		}
		if ops := srv.Ops(); !slices.Equal(ops[:min(len(ops), 4)], wantOps) {
			t.Fatalf("run %d: ops %v, want %v…", run, ops, wantOps)
		}
		for _, r := range srv.Requests() {
			switch r.Op {
			case "tables.insert", "tables.patch":
				exp := time.UnixMilli(r.Table.ExpirationTime)
				if exp.Before(start.Add(2*time.Hour-time.Minute)) || exp.After(time.Now().Add(2*time.Hour+time.Minute)) {
					t.Fatalf("run %d: table expires at %v, want about 2h from now", run, exp)
				}
				if r.Op == "tables.insert" && (r.Table.Schema == nil || len(r.Table.Schema.Fields) == 0) {
					t.Fatalf("table created without the decrypted schema: %s", r.Body)
				}
			case "jobs.insert":
				ld := r.Job.Configuration.Load
				if ld.WriteDisposition != "WRITE_TRUNCATE" || ld.SourceFormat != "AVRO" || !ld.UseAvroLogicalTypes || ld.DestinationTable.TableId != "pb_06" {
					t.Fatalf("load config %+v", ld)
				}
				if len(r.Media) == 0 || !strings.HasPrefix(string(r.Media), "Obj\x01") {
					t.Fatal("the upload is not the Avro copy")
				}
			}
		}
	}
	if _, err := runCLI(t, ctx, "", append(args, "--format", "ndjson")...); err == nil || !strings.Contains(err.Error(), "--format avro") {
		t.Fatalf("ndjson into BigQuery: %v", err)
	}
}
