package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
)

// TestDataflowDryRun: ingest, hourly and view with --runner=dataflow
// --dry_run build and translate the Dataflow job offline (no credentials)
// and print it, and change nothing: no file written, no hour published, no
// leftover cleaned.
func TestDataflowDryRun(t *testing.T) {
	bin := buildCLI(t)
	ctx := context.Background()
	dir := t.TempDir()
	keys := "local:" + filepath.Join(dir, "keys")
	if out, err := run(t, bin, "keys", "init", "--keys", keys); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	tr := synth.Generate(synth.Config{Events: 200, Users: 10, Hours: 2, Seed: 3})
	var lines []byte
	for _, m := range tr.Messages {
		l, _ := m.MarshalLine()
		lines = append(append(lines, l...), '\n')
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if out, err := run(t, bin, "ingest", "--input", in, "--root", root, "--keys", keys, "--quiet"); err != nil {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	h0 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	if out, err := run(t, bin, "hourly", "--root", root, "--hour", layout.FormatHour(h0), "--force"); err != nil {
		t.Fatalf("hourly: %v\n%s", err, out)
	}
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := b.List(ctx, "")

	dataflow := []string{"--runner=dataflow", "--project=my-proj", "--region=europe-west1",
		"--staging_location=gs://bkt/staging", "--temp_location=gs://bkt/tmp", "--dry_run"}
	viewOut := filepath.Join(dir, "view.ndjson")
	for _, tc := range []struct {
		name string
		args []string
		step string // a transform the printed job must contain
	}{
		{"ingest", []string{"ingest", "--input", in, "--root", filepath.Join(dir, "other-root"), "--keys", keys}, "transforms.AnonymizeAndWrite"},
		{"ingest-pubsub-pull", []string{"ingest", "--subscription", "projects/my-proj/subscriptions/events", "--root", filepath.Join(dir, "other-root"),
			"--keys", keys, "--pull-streams", "16"}, "transforms.IngestPubSub/transforms.pullFn"},
		{"ingest-pubsub-dataflow", []string{"ingest", "--subscription", "projects/my-proj/subscriptions/events", "--root", filepath.Join(dir, "other-root"),
			"--keys", keys, "--pubsub-read", "dataflow"}, "pubsub_read"},
		{"hourly", []string{"hourly", "--root", root, "--hour", layout.FormatHour(h0.Add(time.Hour)), "--force"}, "Publish"},
		{"view", []string{"view", "--root", root, "--hour", layout.FormatHour(h0), "--type", "PlaybackEvent", "--out", viewOut, "--keys", keys}, "DecryptFiles/transforms.decryptFileFn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, bin, append(tc.args, dataflow...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, want := range []string{"Dry-run: not submitting job", `\"projectId\": \"my-proj\"`, tc.step, "dry run: the Dataflow job above was built"} {
				if !strings.Contains(out, want) {
					t.Fatalf("output lacks %q:\n%.3000s", want, out)
				}
			}
		})
	}
	after, _ := b.List(ctx, "")
	if !slices.Equal(before, after) {
		t.Fatalf("a dry run changed the root: %d objects before, %d after", len(before), len(after))
	}
	for _, p := range []string{filepath.Join(dir, "other-root"), viewOut} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("a dry run wrote %s", p)
		}
	}
	if _, err := pipelines.ReadManifest(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h0.Add(time.Hour)}); err == nil {
		t.Fatal("a dry run published an hour")
	}
}

// TestWorkerInvocationReachesBeamHarness: Dataflow starts the binary as
// its SDK worker (--worker and Beam's endpoints, no subcommand); the CLI
// hands over to the Beam harness instead of rejecting the flags.
func TestWorkerInvocationReachesBeamHarness(t *testing.T) {
	bin := buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--worker", "--id=1", "--logging_endpoint=127.0.0.1:1", "--control_endpoint=127.0.0.1:1", "--options={}")
	out, _ := cmd.CombinedOutput()
	for _, bad := range []string{"unknown flag", "Usage:", "lockstream: "} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("the worker invocation reached the CLI (%q):\n%s", bad, out)
		}
	}
	// The harness logs this as it starts, before it dials the control
	// endpoint (which then fails, or waits until the timeout): a binary
	// that never reached it fails here, timeout or not.
	if !strings.Contains(string(out), "SerializeHooksToOptions") {
		t.Fatalf("no sign of the Beam harness:\n%s", out)
	}
}
