package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
