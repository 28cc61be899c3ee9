package bq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/bigquery"
	bqv2 "google.golang.org/api/bigquery/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

const (
	testProject = "lockstream-test"
	testDataset = "events"
	testGCSRoot = "gs://ls-bucket/prod"
)

var hour06 = time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)

func playbackMsg(id, user, ip string, pub time.Time) record.Message {
	return record.Message{
		ID: "m-" + id, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":%q,"timestamp":"2026-11-23T06:11:59.000Z","track_id":"t1","ms_played":1234,"country":"SE","ip_address":%q,"device_id":"dev-%s"}`,
			id, user, ip, id)),
	}
}

func accountMsg(id, user, email, name, birth string, pub time.Time) record.Message {
	return record.Message{
		ID: "m-" + id, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: "AccountUpdate", record.AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":%q,"timestamp":1795414320000,"email":%q,"display_name":%q,"birth_year":%s}`,
			id, user, email, name, birth)),
	}
}

type fixture struct {
	ctx    context.Context
	reg    *schemas.Registry
	keys   *keyclient.Fake
	bucket *blob.Dir
	srv    *bqtest.Server
	client *bigquery.Client
	sleeps []time.Duration
	loader *Loader
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := bqtest.NewServer(t)
	c, err := srv.Client(ctx, testProject)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ctx: ctx, reg: reg, keys: keyclient.NewFake(), bucket: b, srv: srv, client: c}
	f.loader = &Loader{Client: c, Dataset: testDataset, Backoff: time.Second,
		Sleep: func(_ context.Context, d time.Duration) error { f.sleeps = append(f.sleeps, d); return nil }}
	return f
}

func (f *fixture) publish(t *testing.T, msgs ...record.Message) []bqtest.Published {
	t.Helper()
	a, err := record.NewAnonymizer(f.reg, f.keys, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := bqtest.Publish(f.ctx, f.bucket, f.reg, a, msgs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func playbackHour() layout.Hour { return layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: hour06} }

func TestLoadHourCreatesPartitionedTableAndLoadsWithTruncate(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06.Add(12*time.Minute)),
		playbackMsg("e2", "bob", "198.51.100.1", hour06.Add(59*time.Minute)))
	f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome { return bqtest.Outcome{OutputRows: 2, Running: 1} }

	res, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot+"/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.srv.Ops(), []string{"tables.get", "tables.insert", "jobs.insert", "jobs.get", "jobs.get"}; !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
	if res.Skipped || res.Attempts != 1 || res.Records != 2 || res.Files != 1 || res.Table != "lockstream-test:events.PlaybackEvent_v1$2026112306" {
		t.Fatalf("result = %+v", res)
	}

	// The table, as sent in tables.insert.
	var tbl *bqv2.Table
	for _, r := range f.srv.Requests() {
		if r.Op == "tables.insert" {
			tbl = r.Table
			if r.Path != "/bigquery/v2/projects/lockstream-test/datasets/events/tables" {
				t.Fatalf("tables.insert path %s", r.Path)
			}
		}
	}
	if tbl.TableReference.TableId != "PlaybackEvent_v1" || tbl.TableReference.DatasetId != testDataset {
		t.Fatalf("table reference %+v", tbl.TableReference)
	}
	if tp := tbl.TimePartitioning; tp == nil || tp.Type != "HOUR" || tp.Field != "_hour" {
		t.Fatalf("time partitioning %+v", tp)
	}
	if cl := tbl.Clustering; cl == nil || !slices.Equal(cl.Fields, []string{"_subject"}) {
		t.Fatalf("clustering %+v", cl)
	}
	type col struct{ name, typ, mode string }
	want := []col{
		{"event_id", "STRING", "REQUIRED"},
		{"timestamp", "TIMESTAMP", "REQUIRED"},
		{"track_id", "STRING", "REQUIRED"},
		{"ms_played", "INTEGER", "REQUIRED"},
		{"country", "STRING", "REQUIRED"},
		{"ip_address", "BYTES", "NULLABLE"},
		{"device_id", "BYTES", "NULLABLE"},
		{"_subject", "STRING", "REQUIRED"},
		{"_key_version", "INTEGER", "REQUIRED"},
		{"_publish_time", "TIMESTAMP", "REQUIRED"},
		{"_hour", "TIMESTAMP", "REQUIRED"},
	}
	var got []col
	for _, fs := range tbl.Schema.Fields {
		mode := fs.Mode
		if mode == "" {
			// The client library omits the mode of nullable fields; the
			// API's default mode is NULLABLE.
			mode = "NULLABLE"
		}
		got = append(got, col{fs.Name, fs.Type, mode})
		if fs.Description == "" {
			t.Errorf("column %s has no description", fs.Name)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("schema\n got %v\nwant %v", got, want)
	}

	// The load job.
	jobs := f.srv.Jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs", len(jobs))
	}
	ld := jobs[0].Configuration.Load
	if ld == nil {
		t.Fatal("not a load job")
	}
	d := ld.DestinationTable
	if d.ProjectId != testProject || d.DatasetId != testDataset || d.TableId != "PlaybackEvent_v1$2026112306" {
		t.Fatalf("destination %+v", d)
	}
	if ld.SourceFormat != "AVRO" || !ld.UseAvroLogicalTypes || ld.WriteDisposition != "WRITE_TRUNCATE" || ld.CreateDisposition != "CREATE_NEVER" {
		t.Fatalf("load config: format %s logical %v write %s create %s", ld.SourceFormat, ld.UseAvroLogicalTypes, ld.WriteDisposition, ld.CreateDisposition)
	}
	if want := []string{"gs://ls-bucket/prod/datasets/PlaybackEvent/v1/2026-11-23/06/part-00000.avro"}; !slices.Equal(ld.SourceUris, want) {
		t.Fatalf("source URIs %v, want %v", ld.SourceUris, want)
	}
	if id := jobs[0].JobReference.JobId; !strings.HasPrefix(id, "lockstream_load_PlaybackEvent_v1_2026112306") || id != res.JobID {
		t.Fatalf("job id %q (result %q)", id, res.JobID)
	}

	// The marker, next to _SUCCESS.
	data, err := blob.ReadAll(f.ctx, f.bucket, "datasets/PlaybackEvent/v1/2026-11-23/06/_BQ_LOADED.lockstream-test.events.json")
	if err != nil {
		t.Fatal(err)
	}
	var m MarkerDoc
	if err := json.Unmarshal(data, &m); err != nil || m.JobID != res.JobID || m.Records != 2 || m.Table != res.Table {
		t.Fatalf("marker %s (%v)", data, err)
	}

	// A re-run issues no request at all, let alone a job.
	f.srv.Reset()
	again, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Skipped || again.JobID != res.JobID || again.Attempts != 0 {
		t.Fatalf("re-run result %+v", again)
	}
	if ops := f.srv.Ops(); len(ops) != 0 {
		t.Fatalf("re-run sent %v", ops)
	}

	// Another hour of the same type reuses the table: get, no insert.
	f.publish(t, playbackMsg("e3", "carol", "192.0.2.1", hour06.Add(time.Hour)))
	f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome { return bqtest.Outcome{OutputRows: 1} }
	h07 := playbackHour()
	h07.Hour = hour06.Add(time.Hour)
	if _, err := f.loader.LoadHour(f.ctx, f.bucket, h07, testGCSRoot); err != nil {
		t.Fatal(err)
	}
	if got, want := f.srv.Ops(), []string{"tables.get", "jobs.insert", "jobs.get"}; !slices.Equal(got, want) {
		t.Fatalf("second hour requests = %v, want %v", got, want)
	}
	if id := f.srv.Jobs()[0].Configuration.Load.DestinationTable.TableId; id != "PlaybackEvent_v1$2026112307" {
		t.Fatalf("second hour destination %s", id)
	}
}

func TestLoadHourRetriesTransientJobErrors(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
	f.srv.OnJob = func(n int, _ *bqv2.Job) bqtest.Outcome {
		switch n {
		case 0:
			return bqtest.Outcome{Error: &bqv2.ErrorProto{Reason: "backendError", Message: "Backend error. Job aborted."}}
		case 1:
			return bqtest.Outcome{Error: &bqv2.ErrorProto{Reason: "rateLimitExceeded", Message: "Exceeded rate limits"}}
		}
		return bqtest.Outcome{OutputRows: 1}
	}
	res, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if err != nil {
		t.Fatal(err)
	}
	jobs := f.srv.Jobs()
	if res.Attempts != 3 || len(jobs) != 3 {
		t.Fatalf("attempts %d, jobs %d; want 3", res.Attempts, len(jobs))
	}
	if !slices.Equal(f.sleeps, []time.Duration{time.Second, 2 * time.Second}) {
		t.Fatalf("backoff %v", f.sleeps)
	}
	ids := map[string]bool{}
	for _, j := range jobs {
		ids[j.JobReference.JobId] = true
		// Every retry replaces the same partition: never a duplicate row.
		if ld := j.Configuration.Load; ld.WriteDisposition != "WRITE_TRUNCATE" || ld.DestinationTable.TableId != "PlaybackEvent_v1$2026112306" {
			t.Fatalf("retry job %+v", ld)
		}
	}
	if len(ids) != 3 || res.JobID != jobs[2].JobReference.JobId {
		t.Fatalf("job ids %v, result %s", ids, res.JobID)
	}
}

func TestLoadHourPermanentJobErrors(t *testing.T) {
	for _, reason := range []string{"invalid", "invalidQuery", "notFound", "accessDenied", "quotaExceeded", "somethingNew"} {
		t.Run(reason, func(t *testing.T) {
			f := newFixture(t)
			f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
			f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome {
				return bqtest.Outcome{
					Error:  &bqv2.ErrorProto{Reason: reason, Message: "Error while reading data", Location: "gs://ls-bucket/prod/x.avro"},
					Errors: []*bqv2.ErrorProto{{Reason: reason, Message: "Error while reading data"}, {Reason: reason, Message: "second detail"}},
				}
			}
			_, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
			var je *JobError
			if !errors.As(err, &je) || !errors.Is(err, ErrLoadFailed) || IsRetryable(err) {
				t.Fatalf("err = %v", err)
			}
			if je.Result.Reason != reason || len(je.Errors) != 2 || !strings.Contains(err.Error(), "second detail") || !strings.Contains(err.Error(), reason) {
				t.Fatalf("job error %+v / %v", je, err)
			}
			if n := len(f.srv.Jobs()); n != 1 || len(f.sleeps) != 0 {
				t.Fatalf("%d jobs, sleeps %v: a permanent error was retried", n, f.sleeps)
			}
			if ok, _ := f.bucket.Exists(f.ctx, layout.LoadMarker(playbackHour(), testProject, testDataset, 1)); ok {
				t.Fatal("marker written for a failed load")
			}
			// Without a marker, the next run tries again.
			f.srv.OnJob = nil
			if _, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot); err != nil || len(f.srv.Jobs()) != 2 {
				t.Fatalf("re-run: %v, jobs %d", err, len(f.srv.Jobs()))
			}
		})
	}
}

func TestLoadHourGivesUpAfterMaxAttempts(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
	f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome {
		return bqtest.Outcome{Error: &bqv2.ErrorProto{Reason: "internalError", Message: "An internal error occurred"}}
	}
	_, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if !IsRetryable(err) || len(f.srv.Jobs()) != 4 || len(f.sleeps) != 3 {
		t.Fatalf("err %v, jobs %d, sleeps %v", err, len(f.srv.Jobs()), f.sleeps)
	}
}

func TestLoadHourRowCountMismatch(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
	f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome { return bqtest.Outcome{OutputRows: 7} }
	_, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if !errors.Is(err, ErrRowCount) {
		t.Fatalf("err = %v", err)
	}
	if ok, _ := f.bucket.Exists(f.ctx, layout.LoadMarker(playbackHour(), testProject, testDataset, 1)); ok {
		t.Fatal("marker written after a row count mismatch")
	}
}

func TestLoadHourRefusesUnfitTableAndUnpublishedHours(t *testing.T) {
	f := newFixture(t)
	if _, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot); !errors.Is(err, ErrNotPublished) {
		t.Fatalf("unpublished hour: %v", err)
	}
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
	f.srv.PutTable(&bqv2.Table{
		TableReference:   &bqv2.TableReference{ProjectId: testProject, DatasetId: testDataset, TableId: "PlaybackEvent_v1"},
		TimePartitioning: &bqv2.TimePartitioning{Type: "DAY", Field: "_hour"},
	})
	if _, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot); !errors.Is(err, ErrTable) {
		t.Fatalf("day-partitioned table: %v", err)
	}
	if len(f.srv.Jobs()) != 0 {
		t.Fatal("job issued into an unfit table")
	}
	if _, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), "/local/dir"); err == nil {
		t.Fatal("non-gs root accepted")
	}
}

func TestTableSchemaMapping(t *testing.T) {
	src := `{"type":"record","name":"X","fields":[
	 {"name":"b","type":"bytes","doc":"d"},
	 {"name":"s","type":["null","string"]},
	 {"name":"i","type":"int"},{"name":"l","type":"long"},
	 {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
	 {"name":"nts","type":["null",{"type":"long","logicalType":"timestamp-millis"}]},
	 {"name":"d","type":"double"},{"name":"f","type":"float"},{"name":"ok","type":"boolean"},
	 {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
	 {"name":"ne","type":["null",{"type":"enum","name":"E2","symbols":["A"]}]}]}`
	s, err := TableSchema([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range s {
		got = append(got, fmt.Sprintf("%s:%s:%v", f.Name, f.Type, f.Required))
	}
	want := []string{"b:BYTES:true", "s:STRING:false", "i:INTEGER:true", "l:INTEGER:true", "ts:TIMESTAMP:true", "nts:TIMESTAMP:false",
		"d:FLOAT:true", "f:FLOAT:true", "ok:BOOLEAN:true", "e:STRING:true", "ne:STRING:false"}
	if !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	if s[0].Description != "d" {
		t.Fatal("doc not carried")
	}
	for _, bad := range []string{
		`{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"array","items":"int"}}]}`,
		`{"type":"record","name":"X","fields":[{"name":"a","type":["null","int","string"]}]}`,
		`{"type":"record","name":"X","fields":[{"name":"a","type":{"type":"int","logicalType":"date"}}]}`,
		`{"type":"record","name":"X","fields":[]}`,
	} {
		if _, err := TableSchema([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	long := strings.Repeat("é", 600) // 1200 bytes
	if d := truncate(long, maxDescription); len(d) > maxDescription || !strings.HasPrefix(long, d) || len(d) != 1024 || !utf8.ValidString(truncate(long, 1023)) {
		t.Fatalf("truncate: %d bytes", len(d))
	}
	// Every registered schema maps.
	reg, _ := schemas.Embedded()
	for _, sc := range reg.All() {
		if _, err := EncryptedTableSchema(sc); err != nil {
			t.Fatalf("%s: %v", sc, err)
		}
	}
}

// publishSupplement writes msgs as supplement n of their hours.
func (f *fixture) publishSupplement(t *testing.T, n int, msgs ...record.Message) {
	t.Helper()
	if err := f.publishPart(layout.SupplementPart(n), msgs...); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) publishPart(part string, msgs ...record.Message) error {
	a, err := record.NewAnonymizer(f.reg, f.keys, record.Options{})
	if err != nil {
		return err
	}
	_, err = bqtest.PublishPart(f.ctx, f.bucket, f.reg, a, msgs, part)
	return err
}

func (f *fixture) marker(t *testing.T, parts int) MarkerDoc {
	t.Helper()
	data, err := blob.ReadAll(f.ctx, f.bucket, layout.LoadMarker(playbackHour(), testProject, testDataset, parts))
	if err != nil {
		t.Fatal(err)
	}
	var m MarkerDoc
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// The partition of an hour is the union of its published parts: a
// supplement published after a load makes the next LoadHour replace the
// partition with every file of every part, under a new marker; a re-run
// after that issues no request.
func TestLoadHourReloadsThePartitionWhenASupplementAppears(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06.Add(12*time.Minute)),
		playbackMsg("e2", "bob", "198.51.100.1", hour06.Add(59*time.Minute)))
	f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome { return bqtest.Outcome{OutputRows: 2} }
	first, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if err != nil {
		t.Fatal(err)
	}
	if first.Skipped || !slices.Equal(first.Parts, []string{"main"}) || first.Records != 2 ||
		first.Marker != "datasets/PlaybackEvent/v1/2026-11-23/06/_BQ_LOADED.lockstream-test.events.json" {
		t.Fatalf("first load %+v", first)
	}
	if m := f.marker(t, 1); m.FormatVersion != MarkerFormatVersion || !slices.Equal(m.Parts, []string{"main"}) || m.JobID != first.JobID {
		t.Fatalf("first marker %+v", m)
	}

	// Late events of the hour, published as its first supplement.
	f.publishSupplement(t, 1, playbackMsg("e3", "carol", "192.0.2.1", hour06.Add(30*time.Minute)))
	f.srv.Reset()
	f.srv.OnJob = func(int, *bqv2.Job) bqtest.Outcome { return bqtest.Outcome{OutputRows: 3} }
	second, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.srv.Ops(), []string{"tables.get", "jobs.insert", "jobs.get"}; !slices.Equal(got, want) {
		t.Fatalf("reload requests = %v, want %v", got, want)
	}
	wantParts := []string{"main", "late-0001"}
	if second.Skipped || second.Attempts != 1 || !slices.Equal(second.Parts, wantParts) || second.Records != 3 || second.Files != 2 ||
		second.Marker != "datasets/PlaybackEvent/v1/2026-11-23/06/_BQ_LOADED.lockstream-test.events.parts-2.json" {
		t.Fatalf("reload %+v", second)
	}
	jobs := f.srv.Jobs()
	ld := jobs[0].Configuration.Load
	wantURIs := []string{
		"gs://ls-bucket/prod/datasets/PlaybackEvent/v1/2026-11-23/06/part-00000.avro",
		"gs://ls-bucket/prod/datasets/PlaybackEvent/v1/2026-11-23/06/late-0001/part-00000.avro",
	}
	if ld.WriteDisposition != "WRITE_TRUNCATE" || ld.CreateDisposition != "CREATE_NEVER" || ld.DestinationTable.TableId != "PlaybackEvent_v1$2026112306" ||
		!slices.Equal(ld.SourceUris, wantURIs) {
		t.Fatalf("reload job: write %s create %s into %s from %v", ld.WriteDisposition, ld.CreateDisposition, ld.DestinationTable.TableId, ld.SourceUris)
	}
	if m := f.marker(t, 2); !slices.Equal(m.Parts, wantParts) || m.Records != 3 || m.JobID != second.JobID {
		t.Fatalf("second marker %+v", m)
	}
	if m := f.marker(t, 1); m.JobID != first.JobID {
		t.Fatalf("the first marker changed: %+v", m)
	}
	dh, err := dataset.ReadPublished(f.ctx, f.bucket, playbackHour())
	if err != nil {
		t.Fatal(err)
	}
	if m, ok, err := ReadMarker(f.ctx, f.bucket, dh, testProject, testDataset); err != nil || !ok || m.JobID != second.JobID {
		t.Fatalf("ReadMarker: %+v %v %v", m, ok, err)
	}

	// Nothing new: no request at all.
	f.srv.Reset()
	again, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Skipped || again.JobID != second.JobID || again.Attempts != 0 || again.Records != 3 || !slices.Equal(again.Parts, wantParts) {
		t.Fatalf("re-run %+v", again)
	}
	if ops := f.srv.Ops(); len(ops) != 0 {
		t.Fatalf("re-run sent %v", ops)
	}

	// An unfinished supplement (no _SUCCESS) is not part of the hour.
	if err := blob.WriteAll(f.ctx, f.bucket, "datasets/PlaybackEvent/v1/2026-11-23/06/late-0002/part-00000.avro", []byte("half")); err != nil {
		t.Fatal(err)
	}
	if again, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot); err != nil || !again.Skipped || len(f.srv.Ops()) != 0 {
		t.Fatalf("unfinished supplement: %+v %v %v", again, err, f.srv.Ops())
	}
}

// A supplement published while the load job runs is loaded too before the
// marker is written: the marker never names fewer parts than the partition
// holds.
func TestLoadHourReloadsWhenASupplementAppearsDuringTheJob(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
	var pubErr error
	f.srv.OnJob = func(n int, _ *bqv2.Job) bqtest.Outcome {
		if n == 0 {
			// On the server's goroutine: no t.Fatal here.
			pubErr = f.publishPart(layout.SupplementPart(1), playbackMsg("e2", "bob", "198.51.100.1", hour06.Add(time.Minute)))
			return bqtest.Outcome{OutputRows: 1}
		}
		return bqtest.Outcome{OutputRows: 2}
	}
	res, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
	if err != nil || pubErr != nil {
		t.Fatal(err, pubErr)
	}
	jobs := f.srv.Jobs()
	if len(jobs) != 2 || len(jobs[1].Configuration.Load.SourceUris) != 2 || jobs[1].Configuration.Load.WriteDisposition != "WRITE_TRUNCATE" {
		t.Fatalf("%d jobs (want a reload with both parts)", len(jobs))
	}
	if res.Attempts != 2 || res.Records != 2 || res.JobID != jobs[1].JobReference.JobId || !slices.Equal(res.Parts, []string{"main", "late-0001"}) {
		t.Fatalf("result %+v", res)
	}
	if ok, _ := f.bucket.Exists(f.ctx, layout.LoadMarker(playbackHour(), testProject, testDataset, 1)); ok {
		t.Fatal("a marker for the main part alone was written after the supplement appeared")
	}
	if m := f.marker(t, 2); m.Records != 2 {
		t.Fatalf("marker %+v", m)
	}
}

func TestLoadHourRefusesASupplementOfAnotherHour(t *testing.T) {
	f := newFixture(t)
	f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
	// A supplement whose manifest describes 07 copied into 06.
	f.publishSupplement(t, 1, playbackMsg("e2", "bob", "198.51.100.1", hour06.Add(time.Hour)))
	from := "datasets/PlaybackEvent/v1/2026-11-23/07/late-0001/"
	to := "datasets/PlaybackEvent/v1/2026-11-23/06/late-0001/"
	for _, n := range []string{layout.Manifest, layout.Success} {
		if err := f.bucket.Copy(f.ctx, from+n, to+n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "late-0001") {
		t.Fatalf("err = %v, want ErrManifest naming the part", err)
	}
	if len(f.srv.Jobs()) != 0 {
		t.Fatal("job issued")
	}
}

// TestLoadHourFingerprintByManifestFormat: a manifest of format 3 must
// carry the specification's fingerprint; hours published before (formats
// 1 and 2, goavro's canonical form) keep loading with the fingerprint they
// recorded; a fingerprint of another schema is refused in any format.
func TestLoadHourFingerprintByManifestFormat(t *testing.T) {
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	s, err := reg.Lookup("PlaybackEvent", 1)
	if err != nil {
		t.Fatal(err)
	}
	enc := s.Encrypted()
	for _, c := range []struct {
		format int
		fp     string
		ok     bool
	}{
		{3, enc.Fingerprint, true},
		{3, enc.FingerprintV1, false},
		{2, enc.FingerprintV1, true},
		{1, enc.FingerprintV1, true},
		{2, enc.Fingerprint, true},
		{2, strings.Repeat("0", 64), false},
	} {
		f := newFixture(t)
		f.publish(t, playbackMsg("e1", "alice", "203.0.113.7", hour06))
		name := "datasets/PlaybackEvent/v1/2026-11-23/06/" + layout.Manifest
		data, err := blob.ReadAll(f.ctx, f.bucket, name)
		if err != nil {
			t.Fatal(err)
		}
		var m layout.ManifestDoc
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		m.FormatVersion, m.SchemaFingerprint = c.format, c.fp
		if m.FormatVersion >= 2 {
			m.Part, m.RunID, m.PublishedAt = layout.MainPart, "test", time.Now().UTC()
		}
		data, _ = json.Marshal(m)
		if err := f.bucket.Delete(f.ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := blob.WriteAll(f.ctx, f.bucket, name, data); err != nil {
			t.Fatal(err)
		}
		_, err = f.loader.LoadHour(f.ctx, f.bucket, playbackHour(), testGCSRoot)
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrManifest)) {
			t.Errorf("format %d, fingerprint %.8s: err %v, want ok=%v", c.format, c.fp, err, c.ok)
		}
	}
}
