package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/status"
	"github.com/lockstream/lockstream/status/statustest"
)

// TestStatusCLI: `lockstream status` on a root built object by object
// (package statustest): the table and the JSON say which hour waits for
// which live writer, which is complete but unpublished, which is published
// with a supplement and a pending late part, the dead letters by reason,
// and which writer is stale.
func TestStatusCLI(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "root")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	statustest.Build(t, b)
	args := []string{"status", "--root", root, "--since", "2026-11-23T04", "--now", "2026-11-23T07:30:00Z"}

	out, err := runCLI(t, ctx, "", args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"PlaybackEvent v1 2026-11-23T04 2 yes, hourly run-h1 at 2026-11-23T05:03:00Z yes 12 1 1 - proj.events proj.staging (1/2 parts)",
		"PlaybackEvent v1 2026-11-23T05 2 yes, run-old/stream-000 at 2026-11-23T06:02:00Z no - 0 1 missing_field:2 unknown_field:1 -",
		"PlaybackEvent v1 2026-11-23T06 1 no no - 0 0 - - waiting for live writer run-x/stream-000 (watermark 2026-11-23T06:41:00Z, heartbeat 2m0s ago)",
		"(unknown) - 2026-11-23T05 - - - - - - malformed_json:1 unknown_event_type:1 -",
		"run-dead/stream-000 stream running 2026-11-23T06:21:00Z 2m0s 10m0s ago stale",
		"run-x/stream-000 stream running 2026-11-23T06:41:00Z 2m0s 2m0s ago live",
	} {
		if !lines[want] {
			t.Errorf("the table lacks the line\n  %s\n%s", want, out)
		}
	}

	out, err = runCLI(t, ctx, "", append(args, "--format", "json", "--type", "PlaybackEvent")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(r.Hours) != 3 {
		t.Fatalf("--type PlaybackEvent: %d hours, want 3 (no AccountUpdate, no (unknown)):\n%s", len(r.Hours), out)
	}
	h4, h5, h6 := r.Hours[0], r.Hours[1], r.Hours[2]
	if !h4.Published || h4.Supplements != 1 || h4.LatePending != 1 || h4.Records != 12 {
		t.Errorf("04: %+v", h4)
	}
	if h5.Published || h5.Complete == nil || h5.Complete.ObservedBy != statustest.Observer05 || h5.DeadLettered["missing_field"] != 2 || h5.DeadLettered["unknown_field"] != 1 {
		t.Errorf("05: %+v", h5)
	}
	if h6.Complete != nil || !strings.Contains(h6.Waiting, "waiting for live writer "+statustest.LiveWriter) {
		t.Errorf("06: %+v", h6)
	}
	if len(r.Writers) != 2 || r.Writers[0].ID != statustest.StaleWriter || !r.Writers[0].Stale || !r.Writers[1].Live {
		t.Errorf("writers: %+v", r.Writers)
	}
}

// TestStatusCLIErrors: a configuration error fails in one line before
// ROOT is read (or created).
func TestStatusCLIErrors(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "nothing-here")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status"}, "--root is required"},
		{[]string{"status", "--root", missing}, "no such directory"},
		// A gs:// root is never contacted: the flag fails first.
		{[]string{"status", "--root", "gs://no-such-bucket-lockstream/x", "--since", "yesterday"}, "--since"},
		{[]string{"status", "--root", missing, "--until", "06"}, "--until"},
		{[]string{"status", "--root", missing, "--format", "yaml"}, "--format"},
		{[]string{"status", "--root", missing, "--type", "Nope"}, "not a registered event type"},
		{[]string{"status", "--root", missing, "--since", "2026-11-23T08", "--until", "2026-11-23T06"}, "not before"},
	} {
		out, err := runCLI(t, ctx, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line with %q\n%s", c.args, err, c.want, out)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("status created %s (%v)", missing, err)
	}
}

// TestStatusHTMLWatchMetrics: --format html --out writes the page; --watch
// rewrites it every interval and --metrics-listen serves the gauges of the
// last report, until the context ends.
func TestStatusHTMLWatchMetrics(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	statustest.Build(t, b)
	page := filepath.Join(dir, "status.html")
	if out, err := runCLI(t, ctx, "", "status", "--root", root, "--since", "2026-11-23T04", "--now", "2026-11-23T07:30:00Z",
		"--format", "html", "--out", page, "--stuck-after", "10m"); err != nil || out != "" {
		t.Fatalf("%v\n%s", err, out)
	}
	data, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`data-hour="2026-11-23T06" data-state="stuck"`, "Needs attention", "<script id=\"report\" type=\"application/json\">"} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("page lacks %q", want)
		}
	}
	if strings.Contains(string(data), "http://") || strings.Contains(string(data), "https://") {
		t.Fatal("the page names a URL: it must fetch nothing")
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	page2 := filepath.Join(dir, "watch.html")
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runStatus(wctx, io.Discard, io.Discard, statusFlags{root: root, since: "2026-11-23T04", format: "html", out: page2,
			watch: time.Second, stuckAfter: status.DefaultStuckAfter, metricsListen: "127.0.0.1:0", ready: func(a string) { addr <- a }})
	}()
	var a string
	select {
	case a = <-addr:
	case err := <-done:
		t.Fatalf("status --watch ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no metrics listener")
	}
	var first time.Time
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(page2); err == nil {
			if first.IsZero() {
				first = st.ModTime()
			} else if st.ModTime().After(first) {
				break // rewritten
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("--watch did not rewrite the page")
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get("http://" + a + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`lockstream_status_hours_stuck{type="PlaybackEvent",version="1"} 1`, "lockstream_status_dead_letters{", "lockstream_status_last_update_timestamp_seconds"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	if strings.Contains(string(body), "2026-11-23T") {
		t.Fatal("a metric label names an hour")
	}
	data, err = os.ReadFile(page2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `http-equiv="refresh" content="1"`) {
		t.Fatal("a watched page does not reload itself")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--watch did not stop with its context")
	}
	for _, args := range [][]string{
		{"status", "--root", root, "--metrics-listen", "127.0.0.1:0"},
		{"status", "--root", root, "--watch", "1s", "--now", "2026-11-23T07"},
		{"status", "--root", root, "--stuck-after", "0s"},
		{"status", "--root", root, "--out", filepath.Join(dir, "no", "such", "dir.html")},
	} {
		if out, err := runCLI(t, ctx, "", args...); err == nil {
			t.Errorf("%q: no error\n%s", args, out)
		}
	}
}
