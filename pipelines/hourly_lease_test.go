package pipelines

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/synth"
)

// TestHourlyLeaseLostWhilePaused: a run paused (hook, lease renewal
// stopped) after its files are in place and before its manifest. While
// its lease is live another run is turned away (ErrLeaseHeld, saying who
// holds it); once it expired a second run takes over — with more raw data
// arrived meanwhile, so its files differ — replaces the paused run's files
// and publishes. The paused run then fails with dataset.ErrLeaseLost and
// writes nothing: the hour verifies and is the second run's.
func TestHourlyLeaseLostWhilePaused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	hr := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	h := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: hr}
	ingestSynth(t, root, synth.Config{Start: hr, Events: 400, Users: 20, Hours: 1, Seed: 21}, "")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 3 * time.Second
	paused, resume := make(chan struct{}), make(chan struct{})
	type result struct {
		res *HourlyResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: 1, Hour: hr, RunID: "runA", LeaseTTL: ttl,
			Hooks: &HourlyHooks{BeforeManifest: func(layout.Hour) { close(paused); <-resume }}})
		done <- result{res, err}
	}()
	select {
	case <-paused:
	case r := <-done:
		t.Fatalf("run A ended without pausing: %+v %v", r.res, r.err)
	}
	partDir := layout.DatasetDir(h.Type, h.Version, hr)
	filesA, err := dataset.PartObjects(ctx, b, partDir)
	if err != nil || len(filesA) == 0 {
		t.Fatalf("run A has no files in place: %v %v", filesA, err)
	}

	// A live lease: another run is turned away.
	_, err = Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: 1, Hour: hr, RunID: "runC"})
	var held *dataset.HeldError
	if !errors.Is(err, ErrLeaseHeld) || !errors.As(err, &held) || held.RunID != "runA" {
		t.Fatalf("run C while A holds the lease: %v", err)
	}

	// More raw data for the hour, then past A's expiry.
	extra, err := blob.Open(ctx, filepath.Join(dir, "extra"))
	if err != nil {
		t.Fatal(err)
	}
	ingestSynth(t, extra.Root(), synth.Config{Start: hr, Events: 120, Users: 10, Hours: 1, Seed: 22}, "z")
	extraParts := copyParts(t, extra, b, h, layout.RawDir(h.Type, h.Version, hr), "z")
	data, err := blob.ReadAll(ctx, b, layout.LeaseName(h.Type, h.Version, hr))
	if err != nil {
		t.Fatal(err)
	}
	var doc dataset.LeaseDoc
	if err := json.Unmarshal(data, &doc); err != nil || doc.RunID != "runA" {
		t.Fatalf("lease %s: %v", data, err)
	}
	time.Sleep(time.Until(doc.Expires) + 200*time.Millisecond)

	resB, err := Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: 1, Hour: hr, RunID: "runB"})
	if err != nil || resB.State != StatePublished {
		t.Fatalf("run B: %+v %v", resB, err)
	}
	if resB.Leftovers == 0 || resB.Removed == 0 {
		t.Fatalf("run B found %d of A's files and removed %d (A left %d)", resB.Leftovers, resB.Removed, len(filesA))
	}
	close(resume)
	r := <-done
	if !errors.Is(r.err, dataset.ErrLeaseLost) {
		t.Fatalf("run A after its lease expired: %+v %v", r.res, r.err)
	}

	d, err := dataset.ReadPublished(ctx, b, h)
	if err != nil {
		t.Fatal(err)
	}
	m := d.Parts[0].Manifest
	if len(d.Parts) != 1 || m.RunID != "runB" || m.Records != resB.Manifest.Records {
		t.Fatalf("published: %d parts, run %s, %d records (run B published %d)", len(d.Parts), m.RunID, m.Records, resB.Manifest.Records)
	}
	for _, p := range extraParts {
		if !slices.Contains(m.Parts, p) {
			t.Fatalf("the manifest does not list %s: %v", p, m.Parts)
		}
	}
	if err := dataset.Verify(ctx, b, d); err != nil {
		t.Fatal(err)
	}
	names, err := dataset.PartObjects(ctx, b, partDir)
	if err != nil || len(names) != len(m.Files)+2 {
		t.Fatalf("%s holds %v for %d files: %v", partDir, names, len(m.Files), err)
	}
	ids := hourIDs(t, b, h)
	var z int
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("%s published %d times", id, n)
		}
		if strings.HasPrefix(id, "ev-z") {
			z++
		}
	}
	if z == 0 {
		t.Fatal("the published hour lacks the data only run B read")
	}
	for _, prefix := range []string{layout.TmpArea + "/", layout.LeasesArea + "/"} {
		if names, _ := b.List(ctx, prefix); len(names) != 0 {
			t.Fatalf("left behind: %v", names)
		}
	}
}

// TestHourlyNotReadyCarriesTheReason: an hour with raw data and no writer
// records is not ready, and the error says why (as does a live writer
// that holds it); neither takes a lease or marks the hour. Force publishes
// it and marks it complete, as forced.
func TestHourlyNotReadyCarriesTheReason(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hr := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	h := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: hr}
	src, err := blob.Open(ctx, filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	ingestSynth(t, src.Root(), synth.Config{Start: hr, Events: 200, Users: 10, Hours: 1, Seed: 31}, "")
	b, err := blob.Open(ctx, filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	copyParts(t, src, b, h, layout.RawDir(h.Type, h.Version, hr), "r")
	cfg := HourlyConfig{Root: b.Root(), Type: h.Type, Version: 1, Hour: hr}

	notReady := func(want string) {
		t.Helper()
		_, err := Hourly(ctx, cfg)
		var nr *NotReadyError
		if !errors.Is(err, ErrNotReady) || !errors.As(err, &nr) || !strings.Contains(nr.Decision.Reason, want) || !strings.Contains(err.Error(), nr.Decision.Reason) {
			t.Fatalf("err = %v, want not ready because %q", err, want)
		}
		for _, name := range []string{layout.LeaseName(h.Type, h.Version, hr), layout.CompleteName(h.Type, h.Version, hr)} {
			if ok, _ := b.Exists(ctx, name); ok {
				t.Fatalf("a hour that is not ready got %s", name)
			}
		}
	}
	notReady("no writer has passed 2026-11-23T07")
	now := time.Now().UTC()
	live := &completion.Record{RunID: "live", Part: "stream-000", Kind: completion.KindStream, State: completion.StateRunning,
		StartedAt: now, HeartbeatAt: now}
	if err := completion.Write(ctx, b, live); err != nil {
		t.Fatal(err)
	}
	notReady("waiting for live writer live/stream-000")

	cfg.Force = true
	res, err := Hourly(ctx, cfg)
	if err != nil || res.State != StatePublished || res.Manifest.Records == 0 {
		t.Fatalf("forced: %+v %v", res, err)
	}
	m, err := completion.ReadMarker(ctx, b, h)
	if err != nil || !m.Forced {
		t.Fatalf("marker after a forced publication: %+v %v", m, err)
	}
}
