package completion

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

func TestClaimRecordsAndObserve(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 7, 30, 0, 0, time.UTC)
	h6 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)}
	h7 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h6.Hour.Add(time.Hour)}

	if err := Claim(ctx, b, RunInfo{RunID: "r1", Source: "replay", StartedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := Claim(ctx, b, RunInfo{RunID: "r1", Source: "replay", StartedAt: now}); !errors.Is(err, ErrRunIDUsed) {
		t.Fatalf("a reused run id: %v", err)
	}
	rec := &Record{RunID: "r1", Part: "replay", Kind: KindBounded, State: StateRunning, StartedAt: now, HeartbeatAt: now}
	if err := Write(ctx, b, rec); err != nil {
		t.Fatal(err)
	}
	var marks HourMarks
	for _, h := range []layout.Hour{h6, h7, h6} {
		if err := marks.Mark(ctx, b, "r1", h); err != nil {
			t.Fatal(err)
		}
	}
	open, err := Open(ctx, b)
	if err != nil || len(open) != 2 || open[0] != h6 || open[1] != h7 {
		t.Fatalf("open hours %v %v", open, err)
	}
	o := &Observer{Bucket: b, Name: "test", Now: func() time.Time { return now }}
	ds, err := o.Observe(ctx, open)
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Complete || ds[0].Marked {
		t.Fatalf("a running replay's hour is complete: %+v", ds[0])
	}
	// A stale copy of the record cannot overwrite a newer one.
	stale := *rec
	rec.State, rec.HeartbeatAt = StateFinished, now
	if err := Write(ctx, b, rec); err != nil {
		t.Fatal(err)
	}
	stale.Note = "zombie"
	if err := Write(ctx, b, &stale); !errors.Is(err, blob.ErrPrecondition) {
		t.Fatalf("write at a stale generation: %v", err)
	}
	recs, err := Load(ctx, b)
	if err != nil || len(recs) != 1 || recs[0].State != StateFinished || len(recs[0].Hours) != 2 {
		t.Fatalf("records %+v %v", recs, err)
	}
	ds, err = o.Observe(ctx, open)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if !d.Complete || !d.MarkedNow {
			t.Fatalf("after the replay finished: %+v", d)
		}
	}
	m, err := ReadMarker(ctx, b, h6)
	if err != nil || m.ObservedBy != "test" || len(m.Vouchers) != 1 || m.Vouchers[0] != "r1/replay" {
		t.Fatalf("marker %+v %v", m, err)
	}
	if open, _ := Open(ctx, b); len(open) != 0 {
		t.Fatalf("open after completion: %v", open)
	}
	// BeforeMark can stop an observation (the crash hook).
	h8 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h7.Hour.Add(time.Hour)}
	if err := marks.Mark(ctx, b, "r1", h8); err != nil {
		t.Fatal(err)
	}
	o.BeforeMark = func(layout.Hour) error { return errors.New("crash") }
	if _, err := o.Observe(ctx, []layout.Hour{h8}); err == nil {
		t.Fatal("BeforeMark's error was ignored")
	}
	if ok, _ := IsComplete(ctx, b, h8); ok {
		t.Fatal("marked despite BeforeMark")
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 7, 30, 0, 0, time.UTC)
	h6 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)}
	var marks HourMarks
	for i, run := range []string{"old-complete", "old-open", "recent"} {
		beat := now.Add(-8 * 24 * time.Hour)
		if i == 2 {
			beat = now.Add(-time.Hour)
		}
		if err := Write(ctx, b, &Record{RunID: run, Part: "replay", Kind: KindBounded, State: StateFinished, HeartbeatAt: beat}); err != nil {
			t.Fatal(err)
		}
		h := h6
		if run == "old-open" {
			h.Hour = h.Hour.Add(time.Hour)
		}
		if err := marks.Mark(ctx, b, run, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteMarker(ctx, b, h6, Decision{}, "test", now, false); err != nil {
		t.Fatal(err)
	}
	removed, err := Prune(ctx, b, now, DefaultKeepRecords)
	if err != nil || len(removed) != 1 || removed[0] != "old-complete" {
		t.Fatalf("pruned %v %v, want only old-complete", removed, err)
	}
	if names, _ := b.List(ctx, layout.WriterDir("old-complete")); len(names) != 0 {
		t.Fatalf("left %v", names)
	}
	if recs, _ := Load(ctx, b); len(recs) != 2 {
		t.Fatalf("%d records left, want 2", len(recs))
	}
}
