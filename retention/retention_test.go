package retention

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/schemas"
)

// fill writes an hour's objects by the layout: raw and late parts, a
// published dataset (or an unpublished one), dead letters.
func fill(t *testing.T, b blob.Bucket, typ string, hour time.Time, published bool) {
	t.Helper()
	ctx := context.Background()
	names := []string{
		layout.RawDir(typ, 1, hour) + "part-r1.avro",
		layout.RawDir(typ, 1, hour) + layout.Complete,
		layout.LateDir(typ, 1, hour) + "part-r2.avro",
		layout.DeadLetterDir("malformed_json", hour) + "r1.ndjson",
	}
	if published {
		names = append(names, layout.DatasetDir(typ, 1, hour)+"part-00000-of-00001.avro",
			layout.DatasetDir(typ, 1, hour)+layout.Manifest, layout.DatasetDir(typ, 1, hour)+layout.Success)
	}
	for _, n := range names {
		if ok, _ := b.Exists(ctx, n); ok {
			continue
		}
		if err := blob.WriteAll(ctx, b, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
}

// checkRetention: PlaybackEvent keeps raw 14 days and datasets 400 days,
// AccountUpdate 30 and 730 (schemas/avro). Hours on both sides of each
// boundary: exactly the expired ones go; unpublished expired raw hours are
// held unless asked; the dry run deletes nothing.
func checkRetention(t *testing.T, b blob.Bucket) {
	ctx := context.Background()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	pb, au := reg.Retention("PlaybackEvent"), reg.Retention("AccountUpdate")
	now := time.Date(2027, 6, 1, 12, 30, 0, 0, time.UTC)
	// An hour [h, h+1h) expires at h+1h+keep: the hour ending exactly keep
	// before now is expired, the next one is not.
	edge := func(keep time.Duration) time.Time { return now.Add(-keep - time.Hour).Truncate(time.Hour) }
	pbRawOld, pbRawNew := edge(pb.Raw), edge(pb.Raw).Add(time.Hour)
	pbPubOld, pbPubNew := edge(pb.Published), edge(pb.Published).Add(time.Hour)
	auRawOld := edge(au.Raw)
	unpublished := edge(pb.Raw).Add(-5 * time.Hour)
	for _, h := range []time.Time{pbRawOld, pbRawNew, pbPubOld, pbPubNew} {
		fill(t, b, "PlaybackEvent", h, true)
	}
	fill(t, b, "AccountUpdate", auRawOld, true)
	fill(t, b, "AccountUpdate", pbRawOld, true) // expired for PlaybackEvent's 14 days, not for AccountUpdate's 30
	fill(t, b, "PlaybackEvent", unpublished, false)
	fill(t, b, "NoLongerDeclared", pbPubOld, true)

	before, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanRoot(ctx, b, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range p.Delete {
		got = append(got, it.String())
	}
	dead := func(h time.Time) string { return "deadletter/malformed_json " + layout.FormatHour(h) }
	hr := func(area, typ string, h time.Time) string {
		return area + " " + layout.Hour{Type: typ, Version: 1, Hour: h}.String()
	}
	want := []string{
		// Dead letters go after the longest raw retention (AccountUpdate's 30 days).
		dead(pbPubOld), dead(pbPubNew), dead(auRawOld),
		// Only the dataset hour past 400 days; its neighbour stays.
		hr("datasets", "PlaybackEvent", pbPubOld),
		hr("late", "AccountUpdate", auRawOld),
		hr("late", "PlaybackEvent", pbPubOld), hr("late", "PlaybackEvent", pbPubNew), hr("late", "PlaybackEvent", pbRawOld),
		hr("raw", "AccountUpdate", auRawOld),
		hr("raw", "PlaybackEvent", pbPubOld), hr("raw", "PlaybackEvent", pbPubNew), hr("raw", "PlaybackEvent", pbRawOld),
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("plan deletes\n%v\nwant\n%v", got, want)
	}
	if len(p.Held) != 2 || p.Held[0].Hour.Hour != unpublished || !slices.Equal(p.Undeclared, []string{"NoLongerDeclared"}) {
		t.Fatalf("held %v, undeclared %v", p.Held, p.Undeclared)
	}
	for _, it := range p.Delete {
		if it.Area == layout.DatasetsArea && it.Objects[0] != layout.DatasetDir(it.Hour.Type, 1, it.Hour.Hour)+layout.Success {
			t.Fatalf("%s: _SUCCESS is not deleted first: %v", it, it.Objects)
		}
	}
	if after, _ := b.List(ctx, ""); !slices.Equal(after, before) {
		t.Fatal("planning deleted something")
	}

	var done int
	if err := Apply(ctx, b, p, func(n, total int, _ Item) { done = n }); err != nil || done != len(p.Delete) {
		t.Fatalf("apply: %v after %d of %d", err, done, len(p.Delete))
	}
	after, _ := b.List(ctx, "")
	deleted := map[string]bool{}
	for _, it := range p.Delete {
		for _, o := range it.Objects {
			deleted[o] = true
		}
	}
	for _, n := range before {
		if gone := !slices.Contains(after, n); gone != deleted[n] {
			t.Fatalf("%s: gone %v, planned %v", n, gone, deleted[n])
		}
	}
	for _, h := range []time.Time{pbRawNew, pbPubNew, pbRawOld} {
		if ok, _ := b.Exists(ctx, layout.DatasetDir("PlaybackEvent", 1, h)+layout.Success); !ok {
			t.Fatalf("dataset %s within retention was touched", layout.FormatHour(h))
		}
	}
	again, err := PlanRoot(ctx, b, Options{Now: now})
	if err != nil || len(again.Delete) != 0 {
		t.Fatalf("second plan: %v, %v", again.Delete, err)
	}
	forced, err := PlanRoot(ctx, b, Options{Now: now, IncludeUnpublished: true})
	if err != nil || len(forced.Delete) != 2 || len(forced.Held) != 0 {
		t.Fatalf("with unpublished: %v held %v, %v", forced.Delete, forced.Held, err)
	}
}

func TestRetentionLocal(t *testing.T) {
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	checkRetention(t, b)
}

func TestRetentionGCS(t *testing.T) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Host: "127.0.0.1", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "retention"})
	u, _ := url.Parse(srv.URL())
	t.Setenv("STORAGE_EMULATOR_HOST", u.Host)
	b, err := blob.Open(context.Background(), "gs://retention/root")
	if err != nil {
		t.Fatal(err)
	}
	checkRetention(t, b)
}
