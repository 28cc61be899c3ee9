package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestHourlySkipsHeldAndNotReadyTypes: in one `hourly --since` run, an hour
// whose lease another run holds is skipped with one line saying who holds
// it, an hour that is not complete prints why, and each stops only the
// later hours of its own type; the run exits 0 when it published
// something, 3 when it published nothing and some hour is not ready.
func TestHourlySkipsHeldAndNotReadyTypes(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "root")
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	ingestSynth(t, root, synth.Config{Start: start, Events: 600, Users: 20, Hours: 3, Seed: 61}, "")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	h7, h8 := start.Add(time.Hour), start.Add(2*time.Hour)
	pe := func(hr time.Time) layout.Hour { return layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: hr} }
	au := func(hr time.Time) layout.Hour { return layout.Hour{Type: "AccountUpdate", Version: 1, Hour: hr} }
	lease, err := dataset.AcquireLease(ctx, b, pe(h7), "otherrun", time.Hour, clock.System)
	if err != nil {
		t.Fatal(err)
	}
	// AccountUpdate 07: no marker, and no writer record that could decide it.
	writers := filepath.Join(root, layout.WritersArea)
	if err := os.Rename(writers, writers+".hidden"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, layout.CompleteName("AccountUpdate", 1, h7)); err != nil {
		t.Fatal(err)
	}
	f := hourlyFlags{root: root, since: layout.FormatHour(start), until: layout.FormatHour(start.Add(3 * time.Hour)),
		lookback: time.Hour, shards: 2, keyScope: transforms.DefaultKeyScope, supplementHorizon: defaultSupplementHorizon}
	var out, log bytes.Buffer
	if err := runHourly(ctx, &out, &log, f); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	for _, want := range []string{
		"hourly PlaybackEvent v1 2026-11-23T07: skipped: run otherrun (",
		"is publishing it, lease until " + lease.Doc().Expires.UTC().Format(time.RFC3339),
		"hourly AccountUpdate v1 2026-11-23T07: not ready: no writer has passed 2026-11-23T08",
	} {
		if !strings.Contains(log.String(), want) {
			t.Fatalf("the log lacks %q:\n%s", want, log.String())
		}
	}
	for _, c := range []struct {
		h    layout.Hour
		want bool
	}{{pe(start), true}, {au(start), true}, {pe(h7), false}, {pe(h8), false}, {au(h7), false}, {au(h8), false}} {
		d, err := dataset.Read(ctx, b, c.h)
		if err != nil || d.Published() != c.want {
			t.Fatalf("%s published = %v, want %v (%v)\n%s%s", c.h, d.Published(), c.want, err, out.String(), log.String())
		}
	}
	// Nothing more to publish while both still hold: exit 3 (not ready).
	out.Reset()
	err = runHourly(ctx, &out, &log, f)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitNothingReady {
		t.Fatalf("second run: %v, want exit %d", err, exitNothingReady)
	}
	// Released and decidable again: the rest is published.
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(writers+".hidden", writers); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runHourly(ctx, &out, &log, f); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	for _, h := range []layout.Hour{pe(h7), pe(h8), au(h7), au(h8)} {
		row := fmt.Sprintf("%-16s %-3d %-13s %-20s", h.Type, 1, layout.FormatHour(h.Hour), "published")
		if !strings.Contains(out.String(), row) {
			t.Fatalf("no row %q:\n%s", row, out.String())
		}
	}
}

// TestHourlySupplementHorizon: late data of a published hour before
// --since is published as a supplement when the hour is within
// --supplement-horizon before now, and printed as such; not when it is
// outside the horizon or the horizon is 0; a re-run publishes nothing.
func TestHourlySupplementHorizon(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	ingestSynth(t, root, synth.Config{Start: start, Events: 400, Users: 20, Hours: 2, Seed: 71}, "")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	f := hourlyFlags{root: root, since: layout.FormatHour(start), until: layout.FormatHour(start.Add(2 * time.Hour)),
		lookback: time.Hour, shards: 2, keyScope: transforms.DefaultKeyScope}
	var out, log bytes.Buffer
	if err := runHourly(ctx, &out, &log, f); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	// Late data for PlaybackEvent 06: another batch of traffic.
	scratch := filepath.Join(dir, "scratch")
	ingestSynth(t, scratch, synth.Config{Start: start, Events: 100, Users: 10, Hours: 1, Seed: 72}, "x")
	sb, err := blob.Open(ctx, scratch)
	if err != nil {
		t.Fatal(err)
	}
	h6 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: start}
	parts, err := dataset.InputParts(ctx, sb, h6)
	if err != nil || len(parts) == 0 {
		t.Fatalf("scratch parts: %v %v", parts, err)
	}
	for i, p := range parts {
		data, err := blob.ReadAll(ctx, sb, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := blob.WriteAll(ctx, b, fmt.Sprintf("%spart-x-%d.avro", layout.LateDir(h6.Type, 1, start), i), data); err != nil {
			t.Fatal(err)
		}
	}
	f.since = layout.FormatHour(start.Add(time.Hour))
	f.now = func() time.Time { return start.Add(3*time.Hour + 30*time.Minute) } // 09:30
	supplements := func(horizon time.Duration) int {
		t.Helper()
		f.supplementHorizon = horizon
		out.Reset()
		if err := runHourly(ctx, &out, &log, f); err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		d, err := dataset.Read(ctx, b, h6)
		if err != nil {
			t.Fatal(err)
		}
		return d.Supplements()
	}
	if n := supplements(0); n != 0 {
		t.Fatalf("horizon 0: %d supplements", n)
	}
	if n := supplements(2 * time.Hour); n != 0 {
		t.Fatalf("06 is outside a 2h horizon from 09:30, yet got %d supplements", n)
	}
	if n := supplements(4 * time.Hour); n != 1 {
		t.Fatalf("horizon 4h: %d supplements\n%s%s", n, out.String(), log.String())
	}
	row := fmt.Sprintf("%-16s %-3d %-13s %-20s", "PlaybackEvent", 1, "2026-11-23T06", "supplement late-0001")
	if !strings.Contains(out.String(), row) {
		t.Fatalf("no row %q:\n%s", row, out.String())
	}
	d, err := dataset.ReadPublished(ctx, b, h6)
	if err != nil || d.Parts[1].Manifest.Records == 0 || d.Parts[1].Manifest.Records != d.Parts[1].Manifest.Input.Published {
		t.Fatalf("late-0001: %+v %v", d.Parts[1].Manifest, err)
	}
	if n := supplements(4 * time.Hour); n != 1 || strings.Contains(out.String(), "supplement") {
		t.Fatalf("re-run: %d supplements\n%s", n, out.String())
	}
}
