package dataset

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/layout"
)

// TestPublishPart: a part becomes visible with its manifest and then its
// _SUCCESS; an unfinished attempt's manifest is replaced; a holder whose
// lease was taken over writes nothing; a published part is never
// published again.
func TestPublishPart(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.Starting(time.Date(2026, 11, 23, 7, 5, 0, 0, time.UTC), 1)
	dir := layout.PartDir(testHour.Type, testHour.Version, testHour.Hour, layout.MainPart)
	doc := func(run string) *layout.ManifestDoc {
		return &layout.ManifestDoc{FormatVersion: layout.ManifestFormatVersion, EventType: testHour.Type, SchemaVersion: testHour.Version,
			Hour: layout.FormatHour(testHour.Hour), Part: layout.MainPart, RunID: run, PublishedAt: clk.Now().UTC()}
	}

	// A lease lost to a takeover: nothing is written.
	lost, err := AcquireLease(ctx, b, testHour, "run_lost", time.Minute, clk)
	if err != nil {
		t.Fatal(err)
	}
	later := clock.Starting(clk.Now().Add(2*time.Minute), 1)
	l, err := AcquireLease(ctx, b, testHour, "run_a", time.Minute, later)
	if err != nil {
		t.Fatal(err)
	}
	if err := PublishPart(ctx, b, lost, dir, doc("run_lost")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("publish under a lost lease: %v, want ErrLeaseLost", err)
	}
	if ok, _ := b.Exists(ctx, dir+layout.Manifest); ok {
		t.Fatal("a holder that lost its lease wrote a manifest")
	}

	// An unfinished attempt's manifest is replaced.
	if err := blob.WriteAll(ctx, b, dir+layout.Manifest, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	m := doc("run_a")
	if err := PublishPart(ctx, b, l, dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(ctx, b, dir)
	if err != nil || got.RunID != "run_a" {
		t.Fatalf("manifest after publication: %+v, %v", got, err)
	}
	if ok, _ := b.Exists(ctx, dir+layout.Success); !ok {
		t.Fatal("no _SUCCESS")
	}

	// Published: publishing again fails, and the manifest is never
	// replaced.
	if err := PublishPart(ctx, b, l, dir, m); err == nil {
		t.Fatal("publishing again over a published part: no error")
	}
	if err := createReplacingLeftover(ctx, b, dir+layout.Manifest, []byte("{}")); err == nil {
		t.Fatal("a published part's manifest was replaced")
	}
}
