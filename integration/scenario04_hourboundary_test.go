package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/transforms"
)

// writeReplayFile writes msgs as a replay file and returns its path.
func writeReplayFile(t *testing.T, msgs []record.Message) string {
	t.Helper()
	var lines []byte
	for _, m := range msgs {
		l, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	p := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(p, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func boundaryEvent(msgID, eventID string, pub time.Time) record.Message {
	return record.Message{ID: msgID, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":"pii-boundary-user","timestamp":%d,"track_id":"t","ms_played":5,"country":"SE","ip_address":"pii-ip-%s","device_id":"pii-dev-%s"}`,
			eventID, pub.Add(-time.Second).UnixMilli(), eventID, eventID))}
}

// TestScenario04_HourBoundary: events published in the last and the first
// millisecond of an hour, a retried publish that crosses the boundary, and
// events that arrive after their hour's _COMPLETE: each lands in exactly
// one place — its hour's dataset (a late event of a closed hour that is not
// yet published is published with it), or the late area of its published
// hour — and is counted there.
func TestScenario04_HourBoundary(t *testing.T) {
	ctx := context.Background()
	h6 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	h7, h8 := h6.Add(time.Hour), h6.Add(2*time.Hour)
	first := []record.Message{
		boundaryEvent("m-last", "ev-last", h7.Add(-time.Millisecond)),  // 06:59:59.999 → hour 06
		boundaryEvent("m-first", "ev-first", h7),                       // 07:00:00.000 → hour 07
		boundaryEvent("m-retry-1", "ev-retry", h7.Add(-2*time.Second)), // published at 06:59:58…
		boundaryEvent("m-retry-2", "ev-retry", h7.Add(time.Second)),    // …retried at 07:00:01 with a new message id
		boundaryEvent("m-mid6", "ev-mid6", h6.Add(30*time.Minute)),
		boundaryEvent("m-mid7", "ev-mid7", h7.Add(30*time.Minute)),
		boundaryEvent("m-mid8", "ev-mid8", h8.Add(10*time.Minute)),
	}
	root := t.TempDir()
	keys := transforms.RegisterKeys("scenario04", keyclient.NewFake())
	res1, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, first)}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []time.Time{h6, h7, h8} {
		if ok, _ := b.Exists(ctx, transforms.CompleteName("PlaybackEvent", 1, h)); !ok {
			t.Fatalf("no _COMPLETE for %s after the replay closed it", layout.FormatHour(h))
		}
	}
	for _, h := range []time.Time{h6, h7} {
		if _, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h}); err != nil {
			t.Fatal(err)
		}
	}
	// Later: events of the closed hours arrive (06 and 07 are published, 08
	// is not yet).
	late := []record.Message{
		boundaryEvent("m-late6", "ev-late6", h6.Add(45*time.Minute)),
		boundaryEvent("m-late7", "ev-late7", h7.Add(59*time.Minute)),
		boundaryEvent("m-late8", "ev-late8", h8.Add(20*time.Minute)),
	}
	res2, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, late)}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	if tot := res2.Totals(); tot.Late != 3 || tot.Written != 0 {
		t.Fatalf("late run: %+v, want all 3 counted late", tot)
	}
	if _, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h8}); err != nil {
		t.Fatal(err)
	}
	where := map[string]string{}
	for _, h := range []time.Time{h6, h7, h8} {
		hr := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h}
		if err := pipelines.ReadDatasetEventIDs(ctx, b, hr, func(id string) { where[id] += "dataset " + layout.FormatHour(h) + ";" }); err != nil {
			t.Fatal(err)
		}
		if h == h8 {
			continue // its late file was input to its publication
		}
		names, _ := b.List(ctx, layout.LateDir("PlaybackEvent", 1, h))
		err := transforms.ReadDatasetRecords(ctx, b, "PlaybackEvent", 1, names, func(cols []record.Column, lay *record.Layout, _ []byte) {
			where[string(cols[lay.Dedupe].Bytes)] += "late " + layout.FormatHour(h) + ";"
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{
		"ev-last": "dataset 2026-11-23T06;", "ev-first": "dataset 2026-11-23T07;", "ev-retry": "dataset 2026-11-23T06;",
		"ev-mid6": "dataset 2026-11-23T06;", "ev-mid7": "dataset 2026-11-23T07;",
		"ev-late6": "late 2026-11-23T06;", "ev-late7": "late 2026-11-23T07;",
		"ev-mid8": "dataset 2026-11-23T08;", "ev-late8": "dataset 2026-11-23T08;",
	}
	for id, w := range want {
		if where[id] != w {
			t.Errorf("%s is in %q, want %q", id, where[id], w)
		}
	}
	m7, _ := pipelines.ReadManifest(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h7})
	if m7.Input.LookbackDropped != 1 {
		t.Errorf("hour 07 dropped %d retries already published in 06, want 1", m7.Input.LookbackDropped)
	}
	m8, _ := pipelines.ReadManifest(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h8})
	if m8.Input.RawRecords != 1 || m8.Input.LateRecords != 1 || m8.Input.Published != 2 {
		t.Errorf("hour 08 accounting %+v, want 1 raw + 1 late = 2 published", m8.Input)
	}
	s := invariants.Require(t, ctx, invariants.Input{Scenario: "04-hour-boundary", Root: root, Sent: append(first, late...),
		Canaries: []string{"pii-boundary-user", "pii-ip-ev-last", "pii-dev-ev-late6"}, Ingest: append(res1.Rows, res2.Rows...),
		WantDead: map[string]int64{}, KeysURL: keys, Readable: []string{"pii-ip-ev-last", "pii-ip-ev-first"}})
	if s.Published != 7 || s.Late != 2 {
		t.Fatalf("checker counted %d published and %d waiting late, want 7 and 2", s.Published, s.Late)
	}
}
