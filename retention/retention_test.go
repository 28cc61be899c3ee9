package retention

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/rootid"
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
	id, err := rootid.Get(ctx, b)
	if err != nil {
		t.Fatal(err)
	}

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

	// Every dead letter of two days goes (pbPubOld and pbPubNew are one day).
	days := []time.Time{pbPubOld.Truncate(24 * time.Hour), auRawOld.Truncate(24 * time.Hour)}
	if !slices.Equal(p.ShredDays, days) {
		t.Fatalf("shred days %v, want %v", p.ShredDays, days)
	}

	var done int
	sh := &fakeShredder{}
	a, err := Apply(ctx, b, p, sh, func(n, total int, _ Item) { done = n })
	if err != nil || done != len(p.Delete) || a.Hours != done {
		t.Fatalf("apply: %v after %d of %d", err, done, len(p.Delete))
	}
	if want := []string{record.DeadLetterUser(id, days[0]), record.DeadLetterUser(id, days[1])}; !slices.Equal(sh.users, want) || !slices.Equal(a.Shredded, days) {
		t.Fatalf("shredded %v (%v), want %v", sh.users, a.Shredded, want)
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

// fakeShredder records the keychains it is asked to delete; fail makes the
// deletion of those user ids fail.
type fakeShredder struct {
	users []string
	fail  map[string]error
}

func (f *fakeShredder) DeleteUser(_ context.Context, userID string) error {
	f.users = append(f.users, userID)
	return f.fail[userID]
}

var _ Shredder = (*fakeShredder)(nil)

// deadLetters writes one dead-letter file per (reason, hour).
func deadLetters(t *testing.T, b blob.Bucket, reasons []string, hours ...time.Time) []string {
	t.Helper()
	var names []string
	for _, r := range reasons {
		for _, h := range hours {
			n := layout.DeadLetterDir(r, h) + "batch-1.ndjson"
			if err := blob.WriteAll(context.Background(), b, n, []byte("{}\n")); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
	}
	return names
}

func exist(t *testing.T, b blob.Bucket, names []string) int {
	t.Helper()
	n := 0
	for _, name := range names {
		if ok, err := b.Exists(context.Background(), name); err != nil {
			t.Fatal(err)
		} else if ok {
			n++
		}
	}
	return n
}

// Dead letters of two days, one expired: the apply deletes that day's files
// (every hour, every reason) and shreds exactly that day's dead-letter
// keychain of this root; a day only partly expired keeps its key.
func TestRetentionDeadLetterShred(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := rootid.Get(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	reasons := []string{"malformed_json", "unknown_field"}
	day1 := time.Date(2027, 1, 10, 0, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	old := deadLetters(t, b, reasons, day1.Add(3*time.Hour), day1.Add(23*time.Hour))
	young := deadLetters(t, b, reasons, day2.Add(5*time.Hour))
	keep := DeadLetterRetention(mustEmbedded(t), 0) // AccountUpdate's 30 days
	if keep != 30*24*time.Hour {
		t.Fatalf("dead-letter retention %v, want the longest raw retention, 30 days", keep)
	}

	// Day 1's last hour expires at day2 + keep; day 2's 05 hour later.
	now := day2.Add(keep + time.Hour)
	p, err := PlanRoot(ctx, b, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Delete) != 4 || !slices.Equal(p.ShredDays, []time.Time{day1}) {
		t.Fatalf("plan deletes %v, shreds %v", p.Delete, p.ShredDays)
	}
	if _, err := Apply(ctx, b, p, nil, nil); !errors.Is(err, ErrNoShredder) || exist(t, b, old) != len(old) {
		t.Fatalf("apply without a shredder: %v, %d of %d files left", err, exist(t, b, old), len(old))
	}
	sh := &fakeShredder{}
	a, err := Apply(ctx, b, p, sh, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{record.DeadLetterUser(id, day1)}; !slices.Equal(sh.users, want) || a.Hours != 4 {
		t.Fatalf("shredder called with %v, want %v (hours %d)", sh.users, want, a.Hours)
	}
	if exist(t, b, old) != 0 || exist(t, b, young) != len(young) {
		t.Fatalf("left %d of day 1, %d of %d of day 2", exist(t, b, old), exist(t, b, young), len(young))
	}

	// Part of a day expired: its files go, its key stays.
	part := deadLetters(t, b, reasons[:1], day2.Add(20*time.Hour))
	p, err = PlanRoot(ctx, b, Options{Now: day2.Add(keep + 7*time.Hour)})
	if err != nil || len(p.Delete) != 2 || len(p.ShredDays) != 0 {
		t.Fatalf("partly expired day: %v shreds %v, %v", p.Delete, p.ShredDays, err)
	}
	sh = &fakeShredder{}
	if _, err := Apply(ctx, b, p, sh, nil); err != nil || len(sh.users) != 0 || exist(t, b, young) != 0 || exist(t, b, part) != 1 {
		t.Fatalf("partly expired day: %v, shredded %v", err, sh.users)
	}

	// A failed shred keeps the day's dead letters (the next run retries);
	// the other deletions go on. A keychain that is already gone is fine.
	day3 := day2.Add(24 * time.Hour)
	third := deadLetters(t, b, reasons, day3.Add(time.Hour))
	p, err = PlanRoot(ctx, b, Options{Now: day3.Add(keep + 48*time.Hour)})
	if err != nil || !slices.Equal(p.ShredDays, []time.Time{day2, day3}) {
		t.Fatalf("plan: %v, %v", p.ShredDays, err)
	}
	down := errors.New("key service down")
	sh = &fakeShredder{fail: map[string]error{record.DeadLetterUser(id, day3): down, record.DeadLetterUser(id, day2): keyclient.ErrUnknownUser}}
	if _, err := Apply(ctx, b, p, sh, nil); !errors.Is(err, down) || exist(t, b, part) != 0 || exist(t, b, third) != len(third) {
		t.Fatalf("failed shred: %v; day 2 left %d, day 3 left %d of %d", err, exist(t, b, part), exist(t, b, third), len(third))
	}
}

// A type without a declared retention no longer keeps dead letters
// forever: they go after the longest declared raw retention, or
// DefaultDeadLetterDays when no type declares one; DeadLetterDays
// overrides.
func TestRetentionDeadLettersWithUndeclaredType(t *testing.T) {
	const declared = `{"type":"record","name":"Declared","namespace":"lockstream.events","version":1,"doc":"d","dedupe_key":"event_id",
 "retention":{"raw_days":10,"published_days":20},
 "fields":[{"name":"event_id","type":"string","doc":"id"},{"name":"user_id","type":"string","doc":"u","pii":{"category":"identity","subject":true}}]}`
	const undeclared = `{"type":"record","name":"Forever","namespace":"lockstream.events","version":1,"doc":"d","dedupe_key":"event_id",
 "fields":[{"name":"event_id","type":"string","doc":"id"},{"name":"user_id","type":"string","doc":"u","pii":{"category":"identity","subject":true}}]}`
	ctx := context.Background()
	hour := time.Date(2027, 3, 1, 6, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		files map[string]string
		days  int // Options.DeadLetterDays
		keep  time.Duration
	}{
		{"mixed", map[string]string{"Declared.v1.avsc": declared, "Forever.v1.avsc": undeclared}, 0, 10 * 24 * time.Hour},
		{"none declared", map[string]string{"Forever.v1.avsc": undeclared}, 0, DefaultDeadLetterDays * 24 * time.Hour},
		{"override", map[string]string{"Declared.v1.avsc": declared, "Forever.v1.avsc": undeclared}, 3, 3 * 24 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for n, src := range c.files {
				fsys[n] = &fstest.MapFile{Data: []byte(src)}
			}
			reg, err := schemas.Load(fsys)
			if err != nil {
				t.Fatal(err)
			}
			b, err := blob.OpenDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			fill(t, b, "Forever", hour, true)
			o := Options{Registry: reg, DeadLetterDays: c.days}
			// One hour before the dead letter's expiry it stays; at it, it goes.
			for _, at := range []struct {
				now  time.Time
				want []string
			}{
				{hour.Add(c.keep), nil},
				{hour.Add(time.Hour + c.keep), []string{"deadletter/malformed_json " + layout.FormatHour(hour)}},
			} {
				o.Now = at.now
				p, err := PlanRoot(ctx, b, o)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, it := range p.Delete {
					got = append(got, it.String())
				}
				if !slices.Equal(got, at.want) || p.DeadLetterRetention != c.keep || !slices.Equal(p.Undeclared, []string{"Forever"}) {
					t.Fatalf("at %v: deletes %v (want %v), dead letters kept %v (want %v), undeclared %v",
						at.now, got, at.want, p.DeadLetterRetention, c.keep, p.Undeclared)
				}
			}
		})
	}
	if _, err := PlanRoot(ctx, nil, Options{DeadLetterDays: -1}); err == nil {
		t.Fatal("negative DeadLetterDays accepted")
	}
}

func mustEmbedded(t *testing.T) *schemas.Registry {
	t.Helper()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return reg
}
