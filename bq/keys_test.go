package bq

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	bqv2 "google.golang.org/api/bigquery/v2"

	"github.com/lockstream/lockstream/bq/bqtest"
)

// TestKeysExportAndShredThroughTheAPI: subjects are read from the published
// files, the keys table is replaced by ONE upload load job with
// WRITE_TRUNCATE (key bytes only in the uploaded body, never in the job
// configuration), and after a shred the next replacement's body has no row
// of that subject.
func TestKeysExportAndShredThroughTheAPI(t *testing.T) {
	f := newFixture(t)
	pub := f.publish(t,
		playbackMsg("p1", "alice", "203.0.113.7", hour06),
		playbackMsg("p2", "bob", "198.51.100.1", hour06.Add(time.Hour)),
		accountMsg("a1", "carol", "carol@example.com", "Carol", "1970", hour06))
	// dave is only in a late supplement of 06: his key is needed as much.
	f.publishSupplement(t, 1, playbackMsg("p3", "dave", "192.0.2.9", hour06.Add(time.Minute)))
	hours, err := PublishedHours(f.ctx, f.bucket)
	if err != nil || len(hours) != 3 {
		t.Fatalf("published hours %v, %v", hours, err)
	}
	subs, err := Subjects(f.ctx, f.bucket, f.reg, hours)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{f.keys.SubjectOf("alice"), f.keys.SubjectOf("bob"), f.keys.SubjectOf("carol"), f.keys.SubjectOf("dave")}
	slices.Sort(want)
	if !slices.Equal(subs, want) || len(pub) != 3 {
		t.Fatalf("subjects %v, want %v", subs, want)
	}

	kt := &KeysTable{Client: f.client, Dataset: "restricted", Table: "lockstream_keys", Backoff: time.Millisecond}
	rows, gone, err := KeyRows(f.ctx, f.keys, KeyUses(f.reg), subs)
	if err != nil || len(gone) != 0 {
		t.Fatal(err, gone)
	}
	// One row per subject, category and kind of keyset the schemas use
	// (AES-GCM everywhere, AES-SIV for device: PlaybackEvent v3's
	// device_ref).
	uses := KeyUses(f.reg)
	kinds := 0
	for _, u := range uses {
		if u.AEAD {
			kinds++
		}
		if u.Deterministic {
			kinds++
		}
	}
	if !uses["device"].Deterministic {
		t.Fatal("no shipped schema has a deterministic field")
	}
	if len(rows) != 4*kinds {
		t.Fatalf("%d rows for 4 subjects and %d (category, keyset kind)s of %v", len(rows), kinds, uses.Categories())
	}
	f.srv.OnJob = func(n int, _ *bqv2.Job) bqtest.Outcome {
		if n == 0 {
			return bqtest.Outcome{Error: &bqv2.ErrorProto{Reason: "backendError", Message: "retry me"}}
		}
		return bqtest.Outcome{}
	}
	jobID, err := kt.Replace(f.ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	var uploads []bqtest.Request
	for _, r := range f.srv.Requests() {
		if r.Op == "jobs.insert" {
			uploads = append(uploads, r)
		}
	}
	if len(uploads) != 2 || uploads[1].Job.JobReference.JobId != jobID {
		t.Fatalf("%d load jobs (want a failed one and its retry)", len(uploads))
	}
	for _, up := range uploads {
		if !strings.HasPrefix(up.Path, "/upload/bigquery/v2/projects/lockstream-test/jobs") {
			t.Fatalf("keys load is not an upload: %s", up.Path)
		}
		ld := up.Job.Configuration.Load
		if ld.WriteDisposition != "WRITE_TRUNCATE" || ld.CreateDisposition != "CREATE_IF_NEEDED" || ld.SourceFormat != "NEWLINE_DELIMITED_JSON" ||
			ld.DestinationTable.DatasetId != "restricted" || ld.DestinationTable.TableId != "lockstream_keys" {
			t.Fatalf("keys load config %+v / %+v", ld, ld.DestinationTable)
		}
		var cols []string
		for _, c := range ld.Schema.Fields {
			cols = append(cols, c.Name+":"+c.Type+":"+c.Mode)
		}
		if want := []string{"_subject:STRING:REQUIRED", "category:STRING:REQUIRED", "version:INTEGER:REQUIRED", "keyset:BYTES:REQUIRED", "deterministic:BOOLEAN:REQUIRED"}; !slices.Equal(cols, want) {
			t.Fatalf("keys schema %v", cols)
		}
		if !bytes.Equal(up.Media, NDJSON(rows)) {
			t.Fatal("uploaded body differs from the rows")
		}
		// No key byte in the job configuration (kept in BigQuery's job
		// history), only in the uploaded data.
		for _, r := range rows {
			if bytes.Contains(up.Body, r.Keyset.Reveal()) || bytes.Contains(up.Body, []byte(`"keyset":"`)) {
				t.Fatal("key material in the job configuration")
			}
		}
	}
	if table := f.srv.Table("lockstream-test:restricted.lockstream_keys"); table == nil {
		t.Fatal("keys table not created by the load")
	}

	// Shred bob: the next export's body has no row of his.
	f.keys.DeleteUser("bob")
	f.srv.Reset()
	rows, gone, err = KeyRows(f.ctx, f.keys, KeyUses(f.reg), subs)
	if err != nil || !slices.Equal(gone, []string{f.keys.SubjectOf("bob")}) {
		t.Fatalf("gone %v, %v", gone, err)
	}
	if _, err := kt.Replace(f.ctx, rows); err != nil {
		t.Fatal(err)
	}
	reqs := f.srv.Requests()
	if reqs[0].Op != "jobs.insert" || reqs[0].Job.Configuration.Load.WriteDisposition != "WRITE_TRUNCATE" {
		t.Fatalf("after shred: %v", f.srv.Ops())
	}
	body := string(reqs[0].Media)
	if strings.Contains(body, f.keys.SubjectOf("bob")) || !strings.Contains(body, f.keys.SubjectOf("alice")) || strings.Count(body, "\n") != 3*kinds {
		t.Fatalf("after shred the keys table body is:\n%s", body)
	}
}

func TestViewsApplyCreatesThenUpdates(t *testing.T) {
	f := newFixture(t)
	v := &Views{Client: f.client, Dataset: testDataset, ViewDataset: "analyst", Keys: TableRef{testProject, "restricted", "lockstream_keys"}}
	names, err := v.Apply(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One view per event type, every version in it.
	var want, wantOps []string
	for _, typ := range f.reg.Types() {
		want = append(want, "analyst."+ViewName(typ))
		wantOps = append(wantOps, "tables.get", "tables.insert")
	}
	if !slices.Equal(names, want) {
		t.Fatalf("views %v, want %v", names, want)
	}
	if got := f.srv.Ops(); !slices.Equal(got, wantOps) {
		t.Fatalf("ops %v", got)
	}
	for _, r := range f.srv.Requests() {
		if r.Op != "tables.insert" {
			continue
		}
		if r.Table.View == nil || r.Table.View.UseLegacySql || !strings.Contains(string(r.Body), `"useLegacySql":false`) {
			t.Fatalf("view definition %s", r.Body)
		}
		name := r.Table.TableReference.TableId
		typ := strings.TrimSuffix(name, "_decrypted")
		want, _ := ViewSQL(f.reg, typ, func(v int) TableRef { return TableRef{testProject, testDataset, TableName(typ, v)} }, v.Keys)
		if r.Table.View.Query != want {
			t.Fatalf("view %s query differs from ViewSQL", name)
		}
		for _, ver := range f.reg.Versions(typ) {
			if !strings.Contains(want, "`"+testProject+"."+testDataset+"."+TableName(typ, ver)+"`") {
				t.Fatalf("view %s does not read version %d", name, ver)
			}
		}
	}
	f.srv.Reset()
	if _, err := v.Apply(f.ctx); err != nil {
		t.Fatal(err)
	}
	for i := range wantOps {
		if wantOps[i] == "tables.insert" {
			wantOps[i] = "tables.patch"
		}
	}
	if got := f.srv.Ops(); !slices.Equal(got, wantOps) {
		t.Fatalf("second apply ops %v", got)
	}
}
