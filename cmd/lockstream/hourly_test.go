package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestHourlySinceWithBigQuery drives `hourly --since` as a scheduler would:
// not ready before ingest (exit 3), then every hour published and loaded
// into BigQuery (the recording server), and a second run issues no jobs.
func TestHourlySinceWithBigQuery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	srv := bqtest.NewServer(t)
	f := hourlyFlags{root: root, since: "2026-11-23T06", until: "2026-11-23T08", lookback: time.Hour, shards: 2,
		keyScope: transforms.DefaultKeyScope, bigquery: "events", gcsRoot: "gs://bucket/ls"}
	f.bq.project, f.bq.endpoint = "lockstream-test", srv.URL
	var out, log bytes.Buffer

	// Nothing ingested yet: no raw data at all is not "not ready", it is nothing to do.
	if err := runHourly(ctx, &out, &log, f); err != nil {
		t.Fatalf("empty root: %v", err)
	}

	tr := synth.Generate(synth.Config{Events: 300, Users: 20, Hours: 2, Seed: 4})
	var lines []byte
	for _, m := range tr.Messages {
		l, _ := m.MarshalLine()
		lines = append(append(lines, l...), '\n')
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	keys := transforms.RegisterKeys("hourly-cmd-test", keyclient.NewFake())
	if _, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys}); err != nil {
		t.Fatal(err)
	}
	// Hide one _COMPLETE marker and the writer records that decided it:
	// that hour (and the later ones of its type) are not ready.
	marker := filepath.Join(root, "raw", "PlaybackEvent", "v1", "2026-11-23", "06", "_COMPLETE")
	writers := filepath.Join(root, "writers")
	for _, p := range []string{marker, writers} {
		if err := os.Rename(p, p+".hidden"); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	err := runHourly(ctx, &out, &log, f)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitNothingReady {
		// AccountUpdate 06 may be published first; what matters is that the
		// run reports the hour that is not ready.
		if !strings.Contains(log.String(), "not ready") {
			t.Fatalf("err = %v, log %s", err, log.String())
		}
	}
	if !strings.Contains(log.String(), "hourly PlaybackEvent v1 2026-11-23T06: not ready: no writer has passed") {
		t.Fatalf("the not-ready line does not say why:\n%s", log.String())
	}
	os.Rename(marker+".hidden", marker)
	os.Rename(writers+".hidden", writers)
	out.Reset()
	if err := runHourly(ctx, &out, &log, f); err != nil {
		t.Fatalf("publish: %v\n%s", err, log.String())
	}
	jobs := len(srv.Jobs())
	if jobs != 4 {
		t.Fatalf("%d load jobs for 4 (type, hour)s:\n%s", jobs, out.String())
	}
	// Re-run: every hour already published and loaded → no new job.
	out.Reset()
	if err := runHourly(ctx, &out, &log, f); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Jobs()); n != jobs {
		t.Fatalf("re-run issued %d new load jobs", n-jobs)
	}
	if !strings.Contains(out.String(), "already-published") {
		t.Fatalf("re-run output:\n%s", out.String())
	}
}
