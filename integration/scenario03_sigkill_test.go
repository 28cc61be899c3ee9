package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestScenario03_IngestKilledAndRestarted: `lockstream ingest` reading
// the real Pub/Sub emulator is killed with SIGKILL once it has written some
// raw files, then started again. Nothing is lost (unacked messages come
// back), nothing is duplicated after hourly, and every _COMPLETE marker
// lists only files that exist, with their true record counts.
func TestScenario03_IngestKilledAndRestarted(t *testing.T) {
	bin := buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sub, publish, _ := scenarioPubSub(t, ctx, "sigkill")
	dir := t.TempDir()
	keys := "local:" + filepath.Join(dir, "keys")
	if out, err := run(t, bin, "keys", "init", "--keys", keys); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	tr := synth.Generate(synth.Config{Events: 4000, Users: 100, Hours: 2, Seed: 303})
	sent := publish(tr.Messages)
	root := filepath.Join(dir, "root")
	// A killed writer holds the hours past its watermark until its heartbeat
	// is --stale-after old: short here, so the hours complete in the test.
	args := []string{"ingest", "--subscription", sub, "--root", root, "--keys", keys, "--stale-after", "45s", "--idle-timeout", "10s", "--batch-size", "50"}
	if args[len(args)-3] != "10s" {
		t.Fatal("test setup: the idle timeout is not where the restart expects it")
	}
	var logs bytes.Buffer

	// First run: killed as soon as raw files exist.
	first := exec.Command(bin, args...)
	first.Stdout, first.Stderr = &logs, &logs
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	parts := func() int {
		n := 0
		filepath.Walk(filepath.Join(root, layout.RawArea), func(p string, fi os.FileInfo, err error) error {
			if err == nil && transforms.IsPart(p) {
				n++
			}
			return nil
		})
		return n
	}
	for deadline := time.Now().Add(2 * time.Minute); parts() < 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			first.Process.Kill()
			t.Fatalf("no raw files after 2 minutes:\n%s", logs.String())
		}
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	killedAt := parts()
	killedRuns, n := sigkillRaw(t, ctx, root)
	if n >= int64(len(sent)) {
		t.Fatalf("the first run wrote %d records of %d before the kill: the subscription was drained already", n, len(sent))
	}

	// Second run: drains the subscription. The killed run's messages come
	// back when their leases (extended to 60 s from pull to ack) run out,
	// so it waits longer than that before calling it idle.
	args[len(args)-3] = "75s"
	second := exec.CommandContext(ctx, bin, args...)
	second.Stdout, second.Stderr = &logs, &logs
	if err := second.Run(); err != nil {
		t.Fatalf("restarted ingest: %v\n%s", err, logs.String())
	}
	t.Logf("killed after %d raw files; %d after the restart", killedAt, parts())

	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	hours, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hours {
		sigkillCheckMarker(t, ctx, b, h, killedRuns)
	}
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "03-sigkill-restart", Root: root, Sent: sent, Canaries: tr.Canaries,
		Logs: logs.Bytes(), KeysURL: keys, Readable: []string{synth.IP(0), synth.IP(1)}})
	if strings.Contains(logs.String(), "panic") {
		t.Fatalf("a run panicked:\n%s", logs.String())
	}
}

// sigkillPartRun is the run id in a raw part's name
// (part-<run id>-<batch>.avro).
func sigkillPartRun(name string) string {
	run, _, _ := strings.Cut(strings.TrimPrefix(path.Base(name), transforms.PartPrefix), "-")
	return run
}

// sigkillRaw reads the raw parts under root: the run ids that wrote them
// and the records they hold.
func sigkillRaw(t *testing.T, ctx context.Context, root string) (runs map[string]bool, records int64) {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.RawArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	runs = map[string]bool{}
	for _, name := range names {
		if _, h, _, ok := layout.ParseDir(name); ok && transforms.IsPart(name) {
			runs[sigkillPartRun(name)] = true
			err := dataset.ReadRecords(ctx, b, h.Type, h.Version, []string{name}, func([]record.Column, *record.Layout, []byte) { records++ })
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return runs, records
}

// sigkillCheckMarker checks what an hour's _COMPLETE claims against its raw
// directory: it exists once the restarted run drained, every raw file it
// lists exists, and every raw file of the hour is listed: nothing was
// written to the hour's raw directory after it completed (the killed run's
// files, written before it died, and the restarted run's are all in it).
func sigkillCheckMarker(t *testing.T, ctx context.Context, b blob.Bucket, h layout.Hour, killedRuns map[string]bool) {
	t.Helper()
	m, err := completion.ReadMarker(ctx, b, h)
	if err != nil {
		t.Fatalf("%s: no _COMPLETE after the drained run: %v", h, err)
	}
	names, err := b.List(ctx, layout.RawDir(h.Type, h.Version, h.Hour))
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	killed := 0
	for _, name := range names {
		if !transforms.IsPart(name) {
			continue
		}
		present[path.Base(name)] = true
		if killedRuns[sigkillPartRun(name)] {
			killed++
		}
		if !slices.Contains(m.RawFiles, path.Base(name)) {
			t.Errorf("%s: %s was written to raw after the hour completed (marker by %s)", h, path.Base(name), m.ObservedBy)
		}
	}
	for _, f := range m.RawFiles {
		if !present[f] {
			t.Errorf("%s: the marker lists %s, which does not exist", h, f)
		}
	}
	t.Logf("%s: complete (observed by %s, vouched for by %v); %d raw files, %d of them from the killed run", h, m.ObservedBy, m.Vouchers, len(present), killed)
}
