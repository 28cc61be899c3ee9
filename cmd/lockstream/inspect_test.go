package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
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

func inspectMsg(id string, pub time.Time) record.Message {
	return record.Message{
		ID: "m-" + id, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":"u-%s","timestamp":%q,"track_id":"t1","ms_played":1,"country":"SE","ip_address":"203.0.113.1","device_id":"d"}`,
			id, id, pub.UTC().Format(time.RFC3339))),
	}
}

// TestInspectHourWithSupplements: inspecting a dataset hour prints the
// records of its main part and of its published supplements, with a
// manifest summary per part; an unfinished supplement is named, not read.
func TestInspectHourWithSupplements(t *testing.T) {
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
	for _, p := range []struct {
		part string
		ids  []string
	}{
		{layout.MainPart, []string{"e1", "e2", "e3"}},
		{layout.SupplementPart(1), []string{"e4", "e5"}},
		{layout.SupplementPart(2), []string{"e6"}},
	} {
		var msgs []record.Message
		for i, id := range p.ids {
			msgs = append(msgs, inspectMsg(id, h.Add(time.Duration(i)*time.Minute)))
		}
		if _, err := bqtest.PublishPart(ctx, b, reg, a, msgs, p.part); err != nil {
			t.Fatal(err)
		}
	}
	// late-0002 is unfinished: no _SUCCESS.
	if err := b.Delete(ctx, layout.PartDir("PlaybackEvent", 1, h, layout.SupplementPart(2))+layout.Success); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, filepath.FromSlash(layout.DatasetDir("PlaybackEvent", 1, h)))

	var stdout, stderr bytes.Buffer
	if err := inspect(&stdout, &stderr, dir, 0); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		ids = append(ids, rec["event_id"].(string))
	}
	if want := []string{"e1", "e2", "e3", "e4", "e5"}; !slices.Equal(ids, want) {
		t.Fatalf("records %v, want %v", ids, want)
	}
	summary := stderr.String()
	for _, want := range []string{
		"PlaybackEvent v1 2026-11-23T06 main: 3 records in 1 files",
		"PlaybackEvent v1 2026-11-23T06 late-0001: 2 records in 1 files",
		"late 2,", // the supplement's input is late records
		"late-0002: not published (no _SUCCESS), skipped",
		"hour: 2 published parts (main + 1 supplements), 5 records",
	} {
		if !strings.Contains(summary, want) {
			t.Fatalf("summary lacks %q:\n%s", want, summary)
		}
	}

	// --limit stops inside the supplement.
	stdout.Reset()
	if err := inspect(&stdout, &stderr, dir, 4); err != nil || strings.Count(stdout.String(), "\n") != 4 {
		t.Fatalf("limit 4: %v\n%s", err, stdout.String())
	}
	// A supplement directory on its own is inspected as a directory.
	stdout.Reset()
	stderr.Reset()
	if err := inspect(&stdout, &stderr, filepath.Join(dir, "late-0001"), 0); err != nil || strings.Count(stdout.String(), "\n") != 2 ||
		!strings.Contains(stderr.String(), "late-0001: 2 records") {
		t.Fatalf("supplement dir: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
}
