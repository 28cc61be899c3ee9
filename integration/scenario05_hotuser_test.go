package integration

import (
	"context"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestScenario05_DuplicateStormAndHotUser: half of all events are
// delivered twice and one user has 20% of the events. Output is exact (each
// event once), and the hot user's key lookups are coalesced: the key
// service is asked for that user a handful of times, not once per batch or
// event (the RPC counts are reported).
func TestScenario05_DuplicateStormAndHotUser(t *testing.T) {
	ctx := context.Background()
	tr := synth.Generate(synth.Config{Events: 4000, Users: 400, Hours: 2, DuplicateRate: 0.5, Seed: 505})
	const hot = "pii-user-hot"
	userRE := regexp.MustCompile(`"user_id":"pii-user-\d+"`)
	idRE := regexp.MustCompile(`"event_id":"(ev-\d+)"`)
	hotEvents := 0
	for i, m := range tr.Messages {
		id := idRE.FindSubmatch(m.Data)
		if id == nil {
			continue
		}
		// Every fifth event (by id, so its duplicates follow) belongs to the hot user.
		if n := len(id[1]); (id[1][n-1]-'0')%5 == 0 {
			tr.Messages[i].Data = userRE.ReplaceAll(m.Data, []byte(`"user_id":"`+hot+`"`))
			hotEvents++
		}
	}
	fake := keyclient.NewFake()
	var hotAsked atomic.Int64
	fake.SetHook(func(_ context.Context, _ string, ids []string) error {
		if slices.Contains(ids, hot) {
			hotAsked.Add(1)
		}
		return nil
	})
	kc, err := keyclient.New(fake, keyclient.Options{Scope: transforms.DefaultKeyScope})
	if err != nil {
		t.Fatal(err)
	}
	keys := transforms.RegisterKeys("scenario05", kc)
	root := t.TempDir()
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, tr.Messages)}, Out: root, KeysURL: keys, BatchSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	batches := (len(tr.Messages) + 199) / 200
	st := kc.Stats()
	t.Logf("%d messages (%d duplicates, %d events of the hot user) in %d batches: %d key-service RPCs, the hot user in %d of them; %d ids looked up, %d from the cache, %d coalesced",
		len(tr.Messages), tr.Duplicates, hotEvents, batches, fake.Calls(), hotAsked.Load(), st.Lookups, st.CacheHits, st.Coalesced)
	if hotAsked.Load() == 0 || hotAsked.Load() > 3 {
		t.Fatalf("the hot user was asked for in %d RPCs: lookups are not coalesced/cached", hotAsked.Load())
	}
	if fake.Calls() > int64(batches)*2 {
		t.Fatalf("%d RPCs for %d batches", fake.Calls(), batches)
	}
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	s := invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "05-duplicate-storm-hot-user", Root: root, Sent: tr.Messages,
		Canaries: append(tr.Canaries, hot), Ingest: res.Rows, KeysURL: keys})
	if s.Valid != tr.Unique || s.Published != int64(tr.Unique) {
		t.Fatalf("published %d of %d unique events", s.Published, tr.Unique)
	}
}
