package redrive_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyclient/local"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/redrive"
	"github.com/lockstream/lockstream/rootid"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/status"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

func TestMain(m *testing.M) { ptest.MainWithDefault(m, "prism") }

// registryWithout is the embedded registry less every version of typ
// above keep: the registry an ingest ran with before the newer versions
// existed.
func registryWithout(t *testing.T, typ string, keep int) *schemas.Registry {
	t.Helper()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for _, s := range reg.All() {
		if s.Type == typ && s.Version > keep {
			continue
		}
		fsys[s.File()] = &fstest.MapFile{Data: s.Source()}
	}
	old, err := schemas.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Lookup(typ, keep+1); err == nil {
		t.Fatalf("%s v%d is still in the old registry", typ, keep+1)
	}
	return old
}

type keys struct {
	svc *keyservice.Service
}

// client is a fresh key client (nothing cached) of the ingest scope.
func (k *keys) client(t *testing.T) keyclient.Keys {
	t.Helper()
	c, err := local.New(k.svc, keyclient.Options{Scope: transforms.DefaultKeyScope})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newKeys(t *testing.T) *keys {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := local.InitMasterKey(dir); err != nil {
		t.Fatal(err)
	}
	master, err := local.MasterKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := local.OpenService(dir, master, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return &keys{svc: svc}
}

// TestRedriveSchemaGap: producers sent PlaybackEvent v2 before the ingest's
// registry had it (a schema gap: dead-lettered as unknown_version, sealed).
// With today's registry, which has v2 (a compatible version), redrive
// re-ingests them: those of an hour already published become its
// supplement, those of an hour nothing else wrote become its main part.
// Two redrives (and a third after publication) publish each event exactly
// once; the dead letters of a user deleted meanwhile stay unreadable and
// none of them comes back.
func TestRedriveSchemaGap(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "root")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	v2, err := reg.Lookup("PlaybackEvent", 2)
	if err != nil {
		t.Fatal(err)
	}
	h6 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	h7 := h6.Add(time.Hour)
	at := func(h time.Time, i int) time.Time { return h.Add(time.Duration(10+i) * time.Second) }

	// Hour 06 of v2 is ingested (today's registry) and published.
	var valid []record.Message
	for i := range 5 {
		m := synth.FromSchema(v2, i, synth.User(i), at(h6, i))
		valid = append(valid, m)
	}
	in := filepath.Join(t.TempDir(), "in.ndjson")
	writeReplay(t, in, valid)
	if _, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: transforms.RegisterKeys("redrive-ingest", k.client(t))}); err != nil {
		t.Fatal(err)
	}
	hourly := func(h time.Time) *pipelines.HourlyResult {
		t.Helper()
		res, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 2, Hour: h})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	hourly(h6)

	// The gap: v2 events of 06 and 07 that an ingest without v2 dead-lettered
	// (the same anonymizer and dead-letter format as the write stage); two of
	// them of a user deleted since.
	old := registryWithout(t, "PlaybackEvent", 1)
	scope, err := rootid.Get(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	anon, err := record.NewAnonymizer(old, k.client(t), record.Options{DeadLetterScope: scope})
	if err != nil {
		t.Fatal(err)
	}
	const deleted = "pii-user-deleted"
	var gap []record.Message
	wantIDs := map[string]bool{}
	var deletedIDs []string
	for i := 100; i < 110; i++ {
		h := h6
		if i >= 106 {
			h = h7
		}
		user := synth.User(i)
		if i == 103 || i == 108 {
			user = deleted
		}
		m := synth.FromSchema(v2, i, user, at(h, i))
		m.ID = fmt.Sprintf("gap-%d", i)
		m.Attributes["producer"] = "pii-producer-host" // an attribute other than the contract: sealed separately
		gap = append(gap, m)
		id := fmt.Sprintf("ev-PlaybackEvent-%07d", i)
		if user == deleted {
			deletedIDs = append(deletedIDs, id)
		} else {
			wantIDs[id] = true
		}
	}
	outs, err := anon.Anonymize(ctx, gap)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string][]byte{}
	reason := ""
	for _, o := range outs {
		if o.Reject == nil {
			t.Fatalf("the old registry accepted %s", o.MessageID)
		}
		reason = o.Reject.Reason
		line, err := json.Marshal(o.Reject)
		if err != nil {
			t.Fatal(err)
		}
		name := layout.DeadLetterDir(o.Reject.Reason, o.Hour) + "batch-0001.ndjson"
		lines[name] = append(append(lines[name], line...), '\n')
	}
	if reason != schemas.ReasonUnknownVersion {
		t.Fatalf("dead-lettered as %q, want %s", reason, schemas.ReasonUnknownVersion)
	}
	for name, data := range lines {
		if err := blob.WriteAll(ctx, b, name, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.svc.DeleteUser(ctx, deleted); err != nil {
		t.Fatal(err)
	}

	run := func(label string) *redrive.Result {
		t.Helper()
		res, err := redrive.Run(ctx, redrive.Config{Bucket: b, Reason: reason, Keys: k.client(t), Registry: reg})
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		t.Logf("%s:\n%s", label, res.Summary(reason))
		return res
	}
	first := run("first redrive")
	if first.Files != 2 || first.Messages != 10 || first.Redriven != 8 || first.Already != 0 || first.Shredded != 2 || len(first.Failing) != 0 {
		t.Fatalf("first redrive: %+v", first)
	}
	// 06 was complete: its events went to late/; 07 (nothing else wrote
	// it) got raw data and, the redrive having finished, its _COMPLETE.
	for _, f := range first.Written {
		if strings.Contains(f, "/06/") != strings.HasPrefix(f, layout.LateArea+"/") {
			t.Errorf("wrote %s: 06 is complete (late/), 07 is not (raw/)", f)
		}
	}
	if len(first.Completed) != 1 || !first.Completed[0].Hour.Equal(h7) {
		t.Errorf("completed %v, want PlaybackEvent v2 07", first.Completed)
	}
	// A redrive that died after its ledger entry and before one of its
	// part files: the next one writes that file, with the same name and
	// messages, and re-ingests nothing else.
	lost := first.Written[0]
	if err := b.Delete(ctx, lost); err != nil {
		t.Fatal(err)
	}
	second := run("second redrive")
	if second.Redriven != 0 || second.Already != 8 || second.Shredded != 2 || len(second.Written) != 1 || second.Written[0] != lost {
		t.Fatalf("second redrive: %+v", second)
	}

	// Publication: 06 gets a supplement, 07 its main part; re-runs add nothing.
	if r := hourly(h6); r.Part != layout.SupplementPart(1) || r.Manifest.Records != 5 {
		t.Errorf("06: published %s with %d records, want late-0001 with 5", r.Part, r.Manifest.Records)
	}
	if r := hourly(h7); r.Part != layout.MainPart || r.Manifest.Records != 3 {
		t.Errorf("07: published %s with %d records, want main with 3", r.Part, r.Manifest.Records)
	}
	third := run("third redrive, after publication")
	if third.Redriven != 0 || len(third.Written) != 0 {
		t.Fatalf("third redrive: %+v", third)
	}
	hourly(h6)
	hourly(h7)

	seen := map[string]int{}
	for _, h := range []time.Time{h6, h7} {
		if err := pipelines.ReadDatasetEventIDs(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 2, Hour: h}, func(id string) { seen[id]++ }); err != nil {
			t.Fatal(err)
		}
	}
	for id := range wantIDs {
		if seen[id] != 1 {
			t.Errorf("redriven event %s published %d times, want once", id, seen[id])
		}
	}
	for _, id := range deletedIDs {
		if seen[id] != 0 {
			t.Errorf("event %s of the deleted user was published", id)
		}
	}
	if len(seen) != len(valid)+len(wantIDs) {
		t.Errorf("%d events published, want %d", len(seen), len(valid)+len(wantIDs))
	}
	d6, err := pipelinesRead(ctx, b, h6)
	if err != nil {
		t.Fatal(err)
	}
	if d6 != 1 {
		t.Errorf("06 has %d supplements, want 1", d6)
	}

	// No plaintext: the payloads, user ids and the sealed attribute appear
	// in no object of the root.
	names, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		data, err := blob.ReadAll(ctx, b, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, canary := range []string{"pii-user-", "pii-producer-host", "pii-PlaybackEvent-"} {
			if strings.Contains(string(data), canary) {
				t.Errorf("plaintext %q in %s", canary, n)
			}
		}
	}

	// Status counts the redriven dead letters apart.
	rep, err := status.Build(ctx, b, status.Options{Since: h6, Until: h7.Add(time.Hour), Now: h7.Add(3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var dead, redriven int64
	for _, h := range rep.Hours {
		dead += h.DeadLettered[reason]
		redriven += h.Redriven[reason]
	}
	if dead != 10 || redriven != 8 {
		t.Errorf("status: %d dead letters, %d redriven; want 10, 8", dead, redriven)
	}
}

func pipelinesRead(ctx context.Context, b blob.Bucket, h time.Time) (int, error) {
	rep, err := status.Build(ctx, b, status.Options{Since: h, Until: h.Add(time.Hour), Now: h.Add(5 * time.Hour), Types: []string{"PlaybackEvent"}, Version: 2})
	if err != nil {
		return 0, err
	}
	if len(rep.Hours) != 1 {
		return 0, fmt.Errorf("status of %s: %d rows", layout.FormatHour(h), len(rep.Hours))
	}
	return rep.Hours[0].Supplements, nil
}

func writeReplay(t *testing.T, path string, msgs []record.Message) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for _, m := range msgs {
		line, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(append(line, '\n'))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
