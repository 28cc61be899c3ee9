package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// TestBQLoadReloadsAnHourWhenASupplementAppears: `bq load` loads every
// published hour, skips it on a re-run, and reloads it (WRITE_TRUNCATE, the
// files of every part) once a late supplement is published.
func TestBQLoadReloadsAnHourWhenASupplementAppears(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	b, err := blob.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	a, err := record.NewAnonymizer(reg, keyclient.NewFake(), record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	publish := func(part string, ids ...string) {
		t.Helper()
		var msgs []record.Message
		for _, id := range ids {
			msgs = append(msgs, inspectMsg(id, h.Add(time.Minute)))
		}
		if _, err := bqtest.PublishPart(ctx, b, reg, a, msgs, part); err != nil {
			t.Fatal(err)
		}
	}
	publish(layout.MainPart, "e1", "e2")
	srv := bqtest.NewServer(t)
	args := []string{"bq", "load", "--root", root, "--gcs-root", "gs://bkt/ls", "--bigquery-dataset", "events", "--backoff", "1ms",
		"--project", "lockstream-test", "--bigquery-endpoint", srv.URL}

	out, err := runCLI(t, ctx, "", args...)
	if err != nil || !strings.Contains(out, "loaded  PlaybackEvent v1 2026-11-23T06: 2 rows of main into") || len(srv.Jobs()) != 1 {
		t.Fatalf("first load: %v, %d jobs\n%s", err, len(srv.Jobs()), out)
	}
	srv.Reset()
	if out, err = runCLI(t, ctx, "", args...); err != nil || !strings.Contains(out, "skipped PlaybackEvent v1 2026-11-23T06") || len(srv.Requests()) != 0 {
		t.Fatalf("re-run: %v, %v\n%s", err, srv.Ops(), out)
	}

	publish(layout.SupplementPart(1), "e3")
	srv.Reset()
	out, err = runCLI(t, ctx, "", args...)
	if err != nil || !strings.Contains(out, "loaded  PlaybackEvent v1 2026-11-23T06: 3 rows of main+late-0001 into") {
		t.Fatalf("after the supplement: %v\n%s", err, out)
	}
	jobs := srv.Jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs after the supplement, want 1", len(jobs))
	}
	ld := jobs[0].Configuration.Load
	want := []string{
		"gs://bkt/ls/datasets/PlaybackEvent/v1/2026-11-23/06/part-00000.avro",
		"gs://bkt/ls/datasets/PlaybackEvent/v1/2026-11-23/06/late-0001/part-00000.avro",
	}
	if ld.WriteDisposition != "WRITE_TRUNCATE" || ld.DestinationTable.TableId != "PlaybackEvent_v1$2026112306" || !slices.Equal(ld.SourceUris, want) {
		t.Fatalf("reload job: %s into %s from %v", ld.WriteDisposition, ld.DestinationTable.TableId, ld.SourceUris)
	}
	srv.Reset()
	if out, err = runCLI(t, ctx, "", args...); err != nil || !strings.Contains(out, "skipped PlaybackEvent v1 2026-11-23T06: already loaded by job") ||
		!strings.Contains(out, "(main+late-0001)") || len(srv.Requests()) != 0 {
		t.Fatalf("re-run after the reload: %v, %v\n%s", err, srv.Ops(), out)
	}
}
