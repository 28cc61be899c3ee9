package integration

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestIngestHourlyOnGCSWithFaults runs ingest and hourly against a gs://
// root on fake-gcs-server behind blob's fault proxy: 20% of requests answer
// 503, some responses are lost after the write took effect, and uploads are
// torn now and then. A failed run is re-run, as a scheduler would. Then:
// every hour is published exactly once, _SUCCESS implies the manifest
// matches the objects (sizes, checksums), every event appears once, and a
// re-run over published hours uploads nothing.
func TestIngestHourlyOnGCSWithFaults(t *testing.T) {
	ctx := context.Background()
	srv := startFakeGCS(t)
	target, _ := url.Parse(srv.URL())
	ft := blob.NewFaultyTransport(nil, blob.FaultConfig{Rate5xx: 0.20, RateLostResponse: 0.03, TornUploadEvery: 15, Seed: 3})
	proxy := httptest.NewServer(blob.NewFaultProxy(target, ft))
	defer proxy.Close()
	u, _ := url.Parse(proxy.URL)
	t.Setenv("STORAGE_EMULATOR_HOST", u.Host)
	// A root of its own per run: the process remembers closed hours per
	// root, and with -count=2 the second run's bucket is a new, empty one.
	root := fmt.Sprintf("gs://%s/hourly-it-%d", gcsBucket, time.Now().UnixNano())

	tr := synth.Generate(synth.Config{Events: 1200, Users: 40, Hours: 2, Seed: 31})
	in := filepath.Join(t.TempDir(), "in.ndjson")
	var lines []byte
	for _, m := range tr.Messages {
		l, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	keys := transforms.RegisterKeys("gcs-it", keyclient.NewFake())
	retry := func(what string, f func() error) {
		t.Helper()
		var err error
		for attempt := 1; attempt <= 6; attempt++ {
			if err = f(); err == nil {
				return
			}
			t.Logf("%s attempt %d failed (faults): %v", what, attempt, err)
		}
		t.Fatalf("%s: %v", what, err)
	}
	// Ingest is re-run on failure with the same run id: files of batches
	// that made it exist already and count as written.
	retry("ingest", func() error {
		_, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys, RunID: "gcsit", BatchSize: 200})
		return err
	})
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	var hours []layout.Hour
	for hr := start; hr.Before(start.Add(2 * time.Hour)); hr = hr.Add(time.Hour) {
		var hs []layout.Hour
		retry("list", func() error { hs, err = pipelines.RawHours(ctx, b, hr); return err })
		for _, h := range hs {
			retry("hourly "+h.String(), func() error {
				_, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour})
				return err
			})
			hours = append(hours, h)
		}
	}
	if len(hours) != 4 {
		t.Fatalf("published %d (type, hour)s, want 4", len(hours))
	}
	ft.SetEnabled(false) // check the result without faults
	seen := map[string]int{}
	for _, h := range hours {
		if err := pipelines.VerifyHour(ctx, b, h); err != nil {
			t.Fatal(err)
		}
		if err := pipelines.ReadDatasetEventIDs(ctx, b, h, func(id string) { seen[h.Type+"/"+id]++ }); err != nil {
			t.Fatal(err)
		}
		// Nothing but the manifest's files, _MANIFEST.json and _SUCCESS.
		names, err := b.List(ctx, layout.DatasetDir(h.Type, h.Version, h.Hour))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := pipelines.ReadManifest(ctx, b, h)
		if len(names) != len(m.Files)+2 {
			t.Fatalf("%s: %d objects for %d manifest files: %v", h, len(names), len(m.Files), names)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s published %d times", id, n)
		}
	}
	if len(seen) != tr.Unique {
		t.Fatalf("published %d distinct events, sent %d", len(seen), tr.Unique)
	}
	// A re-run over published hours writes nothing.
	before := ft.Stats().Uploads
	for _, h := range hours {
		res, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour})
		if err != nil || res.State != pipelines.StateAlreadyPublished {
			t.Fatalf("re-run %s: %v %v", h, res, err)
		}
	}
	if after := ft.Stats().Uploads; after != before {
		t.Fatalf("re-run uploaded %d objects", after-before)
	}
	// View of an hour to a gs:// output under faults (its NDJSON parts
	// composed on the server) writes the bytes of a view to a local file,
	// and leaves no parts or temporary objects behind.
	h := hours[0]
	local := filepath.Join(t.TempDir(), "view.ndjson")
	if _, err := pipelines.View(ctx, pipelines.ViewConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Out: local, KeysURL: keys}); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(local)
	if err != nil || len(want) == 0 {
		t.Fatalf("local view: %d bytes, %v", len(want), err)
	}
	ft.SetEnabled(true)
	viewRoot := fmt.Sprintf("gs://%s/view-it-%d", gcsBucket, time.Now().UnixNano())
	retry("view", func() error {
		_, err := pipelines.View(ctx, pipelines.ViewConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Out: viewRoot + "/out.ndjson", KeysURL: keys})
		return err
	})
	ft.SetEnabled(false)
	vb, err := blob.Open(ctx, viewRoot)
	if err != nil {
		t.Fatal(err)
	}
	got, err := blob.ReadAll(ctx, vb, "out.ndjson")
	if err != nil || string(got) != string(want) {
		t.Fatalf("gs:// view: %d bytes (%v), the local view %d", len(got), err, len(want))
	}
	if names, err := vb.List(ctx, ""); err != nil || len(names) != 1 {
		t.Fatalf("the view's output bucket holds %v (%v), want out.ndjson alone", names, err)
	}
	t.Logf("faults injected: %+v", ft.Stats())
}
