package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// The streaming acceptance tests of issue 22, on the built CLI and the real
// Pub/Sub emulator: a job killed between an hour's last ack and its
// _COMPLETE, two jobs on one subscription, memory under a backlog, and a
// PII canary in a message attribute.
//
// The emulator stamps publish times with the real time, so the messages
// of a test land in the current real hour. A job that must see that hour
// pass runs on a clock an hour ahead (--test-clock-start) with no
// lateness and a 1 s delivery delay: its watermark passes the hour as soon
// as it has written everything and found the subscription empty.

// streamCLI is the built CLI with an initialized embedded key service.
type streamCLI struct {
	bin  string
	keys string // local:DIR
	dir  string // temporary directory of the test
}

func newStreamCLI(t *testing.T) *streamCLI {
	t.Helper()
	bin := buildCLI(t)
	dir := t.TempDir()
	keys := "local:" + filepath.Join(dir, "keys")
	if out, err := run(t, bin, "keys", "init", "--keys", keys); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	return &streamCLI{bin: bin, keys: keys, dir: dir}
}

// command is the CLI with args; the caller sets its outputs.
func (c *streamCLI) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "GOOGLE_CLOUD_PROJECT=")
	return cmd
}

// ingestArgs are the arguments of an ingest job reading sub into root.
func (c *streamCLI) ingestArgs(sub, root string, extra ...string) []string {
	return append([]string{"ingest", "--subscription", sub, "--root", root, "--keys", c.keys}, extra...)
}

// streamAheadClock are the flags of a job whose clock runs an hour ahead of
// the real time, with no lateness and a 1 s delivery delay.
func streamAheadClock() []string {
	return []string{"--test-clock-start", time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"--allowed-lateness", "0", "--max-delivery-delay", "1s"}
}

// streamRunWithin runs cmd and fails the test if it has not ended within d
// (it is then killed); started, if given, gets the process id once it runs.
func streamRunWithin(t *testing.T, cmd *exec.Cmd, d time.Duration, what string, logs func() string, started ...func(pid int)) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, f := range started {
		f(cmd.Process.Pid)
	}
	var timedOut atomic.Bool
	timer := time.AfterFunc(d, func() { timedOut.Store(true); cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	if timedOut.Load() {
		t.Fatalf("%s did not end within %s:\n%s", what, d, logs())
	}
	return err
}

// streamTotalIn reads the messages a run took in (the TOTAL row's IN) from
// its accounting table.
func streamTotalIn(t *testing.T, stdout string) int64 {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == "TOTAL" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("accounting table: %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no TOTAL row in ingest's output:\n%s", stdout)
	return 0
}

// streamRateLine is the table's "run X: N messages in D (R/s)" line.
var streamRateLine = regexp.MustCompile(`(?m)^run \S+: \d+ messages in .*$`)

// streamNothingLeft fails the test if pulls from sub find any message for d:
// every message was acknowledged.
func streamNothingLeft(t *testing.T, ctx context.Context, client *pubsub.Client, sub string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := client.SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{Subscription: sub, MaxMessages: 100})
		expired := pctx.Err() != nil
		cancel()
		if err != nil && !expired && !strings.Contains(err.Error(), "DeadlineExceeded") {
			t.Fatalf("pull %s: %v", sub, err)
		}
		if n := len(resp.GetReceivedMessages()); n > 0 {
			t.Fatalf("%d messages are still on %s: they were never acknowledged (first: id %s)", n, sub, resp.ReceivedMessages[0].GetMessage().GetMessageId())
		}
		if err == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// streamRawContent is what the raw area holds: the distinct events ("type/id")
// with their copies, the part files by the run that wrote them, the hours.
type streamRawContent struct {
	events map[string]int
	parts  map[string]int // run id -> raw part files
	hours  map[layout.Hour]bool
}

func streamRaw(t *testing.T, ctx context.Context, root string) streamRawContent {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.RawArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	rc := streamRawContent{events: map[string]int{}, parts: map[string]int{}, hours: map[layout.Hour]bool{}}
	for _, name := range names {
		_, h, _, ok := layout.ParseDir(name)
		if !ok || !transforms.IsPart(name) {
			continue
		}
		rc.hours[h] = true
		rc.parts[sigkillPartRun(name)]++
		err := dataset.ReadRecords(ctx, b, h.Type, h.Version, []string{name}, func(cols []record.Column, lay *record.Layout, _ []byte) {
			rc.events[h.Type+"/"+string(cols[lay.Dedupe].Bytes)]++
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return rc
}

// streamHourSpan is the first hour of hs and the hour after the last.
func streamHourSpan(hs map[layout.Hour]bool) (since, until time.Time) {
	for h := range hs {
		if since.IsZero() || h.Hour.Before(since) {
			since = h.Hour
		}
		if h.Hour.Add(time.Hour).After(until) {
			until = h.Hour.Add(time.Hour)
		}
	}
	return since, until
}

// streamCompleteMarkers lists the _COMPLETE markers under raw/.
func streamCompleteMarkers(t *testing.T, ctx context.Context, root string) []string {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.RawArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if path.Base(n) == layout.Complete {
			out = append(out, n)
		}
	}
	return out
}

// streamRunIDs are the runs that have a writers/<run>/ directory under root.
func streamRunIDs(t *testing.T, ctx context.Context, root string) []string {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.WritersArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, n := range names {
		if p := strings.Split(n, "/"); len(p) >= 3 && strings.HasPrefix(p[2], "stream-") {
			set[p[1]] = true
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// hourlySince runs `lockstream hourly --root root --since since --until
// until` (gated: no --force) and returns its exit code and output. --until
// is given because the messages are in the current real hour, which the
// default (the current hour, excluded) leaves out.
func (c *streamCLI) hourlySince(t *testing.T, root string, since, until time.Time, extra ...string) (int, string) {
	t.Helper()
	args := append([]string{"hourly", "--root", root, "--since", layout.FormatHour(since), "--until", layout.FormatHour(until)}, extra...)
	out, err := run(t, c.bin, args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out
	case errors.As(err, &ee):
		return ee.ExitCode(), out
	default:
		t.Fatalf("hourly: %v\n%s", err, out)
		return -1, out
	}
}

// TestIngestKilledBeforeCompleteNextJobCompletes: an ingest job writes and
// acknowledges a whole hour and is killed (SIGKILL, by its test hook) just
// before it writes the hour's _COMPLETE. Nothing is marked complete, every
// message is acknowledged and written. The next ingest job marks the hour
// complete (its own writer observes it), and `hourly --since` publishes it
// without --force: every event once, none late.
func TestIngestKilledBeforeCompleteNextJobCompletes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newStreamCLI(t)
	sub, publish, client := scenarioPubSub(t, ctx, "killcomplete")
	tr := synth.Generate(synth.Config{Events: 1500, Users: 50, Hours: 1, Seed: 2201})
	sent := publish(tr.Messages)
	root := filepath.Join(c.dir, "root")
	var logs lockedBuffer

	// First job: killed by its hook before its first _COMPLETE.
	first := c.command(c.ingestArgs(sub, root, append(streamAheadClock(), "--idle-timeout", "5m", "--test-exit-before-complete")...)...)
	first.Stdout, first.Stderr = &logs, &logs
	started := time.Now()
	err := streamRunWithin(t, first, 90*time.Second, "the job with --test-exit-before-complete", func() string { return lastLines(logs.Bytes(), 40) })
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the first job ended with %v, want death by SIGKILL:\n%s", err, lastLines(logs.Bytes(), 40))
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the first job ended with %v, want death by SIGKILL:\n%s", ee, lastLines(logs.Bytes(), 40))
	}
	t.Logf("first job killed by its hook after %s", time.Since(started).Round(time.Millisecond))
	if m := streamCompleteMarkers(t, ctx, root); len(m) > 0 {
		t.Fatalf("the killed job wrote _COMPLETE markers: %v", m)
	}
	raw := streamRaw(t, ctx, root)
	if len(raw.events) != tr.Unique {
		t.Fatalf("the killed job wrote %d distinct events of the %d sent: it was killed before the hour's last ack", len(raw.events), tr.Unique)
	}
	streamNothingLeft(t, ctx, client, sub, 4*time.Second)
	runs := streamRunIDs(t, ctx, root)
	if len(runs) != 1 {
		t.Fatalf("writer records of runs %v, want the killed job's only", runs)
	}
	killed := runs[0]
	killedRuns := map[string]bool{killed: true}

	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	// The killed job's records still say running: it never recorded an
	// end. Its streams had passed the hour (that is what it was about to
	// mark), so they hold nothing.
	killedRecords := func(when string) []*completion.Record {
		recs, err := completion.Load(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		var out []*completion.Record
		for _, r := range recs {
			if r.RunID == killed {
				out = append(out, r)
			}
		}
		if len(out) == 0 {
			t.Fatalf("%s: no writer record of the killed run %s", when, killed)
		}
		return out
	}
	before := killedRecords("after the kill")
	for _, r := range before {
		if r.State != completion.StateRunning {
			t.Fatalf("killed writer %s records state %q, want %q (it was killed, it ended nothing)", r.ID(), r.State, completion.StateRunning)
		}
	}

	// Second job: same flags, no hook, drains after 10 s idle.
	var out2 bytes.Buffer
	second := c.command(c.ingestArgs(sub, root, append(streamAheadClock(), "--idle-timeout", "10s")...)...)
	second.Stdout, second.Stderr = io.MultiWriter(&out2, &logs), &logs
	if err := streamRunWithin(t, second, 90*time.Second, "the second job", func() string { return lastLines(logs.Bytes(), 40) }); err != nil {
		t.Fatalf("second job: %v\n%s", err, lastLines(logs.Bytes(), 40))
	}
	if in := streamTotalIn(t, out2.String()); in != 0 {
		t.Errorf("the second job took in %d messages: the killed job had not acknowledged them", in)
	}
	runs = streamRunIDs(t, ctx, root)
	if len(runs) != 2 {
		t.Fatalf("writer records of runs %v, want the killed job's and the second's", runs)
	}
	next := runs[0]
	if next == killed {
		next = runs[1]
	}
	for _, r := range killedRecords("after the second job") {
		if r.State != completion.StateRunning {
			t.Errorf("killed writer %s: state %q after the second job, want %q (only the writer itself writes its record)", r.ID(), r.State, completion.StateRunning)
		}
		wm := "none"
		if r.Watermark != nil {
			wm = r.Watermark.Format(time.RFC3339)
		}
		t.Logf("killed writer %s: state %s, heartbeat %s (%s before now on the real clock + 1h), watermark %s", r.ID(), r.State,
			r.HeartbeatAt.Format(time.RFC3339), time.Now().Add(time.Hour).Sub(r.HeartbeatAt).Round(time.Second), wm)
	}
	for h := range raw.hours {
		m, err := completion.ReadMarker(ctx, b, h)
		if err != nil {
			t.Fatalf("%s: no _COMPLETE after the second job: %v\n%s", h, err, out2.String())
		}
		if !strings.HasPrefix(m.ObservedBy, next+"/") || m.Forced {
			t.Errorf("%s: _COMPLETE observed by %q (forced %v), want a writer of the second run %s", h, m.ObservedBy, m.Forced, next)
		}
		sigkillCheckMarker(t, ctx, b, h, killedRuns)
	}

	since, until := streamHourSpan(raw.hours)
	code, hout := c.hourlySince(t, root, since, until)
	logs.Write([]byte(hout))
	if code != 0 {
		t.Fatalf("hourly --since %s: exit %d, want 0:\n%s", layout.FormatHour(since), code, hout)
	}
	for h := range raw.hours {
		if _, err := dataset.ReadPublished(ctx, b, h); err != nil {
			t.Fatalf("%s not published by hourly --since: %v\n%s", h, err, hout)
		}
	}
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "killed-before-complete", Root: root, Sent: sent, Canaries: tr.Canaries,
		Logs: logs.Bytes(), KeysURL: c.keys, Readable: []string{synth.IP(0)}})
}

// TestTwoIngestJobsOneSubscription: two ingest jobs (each its own run id)
// read one subscription into one root while events are published; both
// drain. Every event is published exactly once, through the gated path,
// and both jobs wrote raw files.
func TestTwoIngestJobsOneSubscription(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newStreamCLI(t)
	// Two processes cannot share the embedded key service (local:DIR
	// holds its store's file lock): both use one key server.
	ks := startScenarioKeyServer(t, server.Config{}, nil)
	c.keys = ks.url()
	sub, publish, client := scenarioPubSub(t, ctx, "twojobs")
	root := filepath.Join(c.dir, "root")
	var logs lockedBuffer
	var outs [2]bytes.Buffer
	var jobs [2]*exec.Cmd
	errs := make(chan error, 2)
	t0 := time.Now()
	for i := range jobs {
		jobs[i] = c.command(c.ingestArgs(sub, root, "--idle-timeout", "15s")...)
		jobs[i].Stdout, jobs[i].Stderr = io.MultiWriter(&outs[i], &logs), &logs
		if err := jobs[i].Start(); err != nil {
			t.Fatal(err)
		}
		go func() { errs <- jobs[i].Wait() }()
	}
	killAll := func() {
		for _, j := range jobs {
			j.Process.Kill()
		}
	}
	defer killAll()
	// Publish once both jobs' streams have records (they are pulling).
	for deadline := time.Now().Add(60 * time.Second); len(streamRunIDs(t, ctx, root)) < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the two jobs did not both start a stream within 60 s:\n%s", lastLines(logs.Bytes(), 40))
		}
	}
	t.Logf("both jobs have stream records after %s", time.Since(t0).Round(time.Millisecond))
	tr := synth.Generate(synth.Config{Events: 4000, Users: 200, Hours: 1, Seed: 2202})
	var sent []record.Message
	const chunks = 8
	for i := 0; i < chunks; i++ {
		lo, hi := i*len(tr.Messages)/chunks, (i+1)*len(tr.Messages)/chunks
		sent = append(sent, publish(tr.Messages[lo:hi])...)
		time.Sleep(500 * time.Millisecond)
	}
	timeout := time.After(2 * time.Minute)
	for range jobs {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("an ingest job failed: %v\n%s", err, lastLines(logs.Bytes(), 40))
			}
		case <-timeout:
			t.Fatalf("the jobs did not drain within 2 minutes:\n%s", lastLines(logs.Bytes(), 40))
		}
	}
	t.Logf("both jobs drained after %s", time.Since(t0).Round(time.Millisecond))
	var in [2]int64
	for i := range outs {
		in[i] = streamTotalIn(t, outs[i].String())
	}
	t.Logf("published %d messages; the jobs took in %d and %d", len(sent), in[0], in[1])
	if in[0] == 0 || in[1] == 0 {
		t.Errorf("the jobs took in %d and %d messages: both should have pulled", in[0], in[1])
	}
	streamNothingLeft(t, ctx, client, sub, 4*time.Second)

	runs := streamRunIDs(t, ctx, root)
	raw := streamRaw(t, ctx, root)
	if len(runs) != 2 {
		t.Fatalf("writer records of runs %v, want two", runs)
	}
	for _, r := range runs {
		if raw.parts[r] == 0 {
			t.Errorf("run %s wrote no raw part file (parts by run: %v)", r, raw.parts)
		}
	}
	t.Logf("raw part files by run: %v", raw.parts)
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatalf("gated hourly: %v", err)
	}
	t.Logf("published after %s", time.Since(t0).Round(time.Millisecond))
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "two-ingest-jobs", Root: root, Sent: sent, Canaries: tr.Canaries,
		Logs: append(logs.Bytes(), ks.log.Bytes()...), KeysURL: c.keys, Readable: []string{synth.IP(0)}})
}

// streamBacklogRun is one measured ingest run of a backlog.
type streamBacklogRun struct {
	published int
	in        int64
	elapsed   time.Duration
	maxRSSKB  int64
}

// TestIngestBacklogMemoryBounded: the built CLI (its own process, no race
// detector) ingests a 20k-message backlog and a 200k-message backlog of the
// same users from the real emulator. Flow control bounds what it holds, so
// its peak RSS (VmHWM, sampled) with 200k is within 20% of its peak with
// 20k; fewer than 1% of the messages are delivered twice; every event is
// published once.
func TestIngestBacklogMemoryBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := newStreamCLI(t)
	const users = 2000
	backlogs := []struct {
		name   string
		events int
		seed   uint64
	}{{"backlog20k", 20_000, 2203}, {"backlog200k", 200_000, 2204}}
	type prepared struct {
		sub    string
		client *pubsub.Client
		tr     *synth.Traffic
		sent   []record.Message
	}
	var preps []prepared
	for _, bl := range backlogs {
		sub, _, client := scenarioPubSub(t, ctx, bl.name)
		tr := synth.Generate(synth.Config{Events: bl.events, Users: users, Hours: 1, Seed: bl.seed})
		s, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub})
		if err != nil {
			t.Fatal(err)
		}
		sent, took := streamPublishFast(t, ctx, client, s.GetTopic(), tr.Messages)
		t.Logf("%s: published %d messages in %s (%.0f msg/s)", bl.name, len(sent), took.Round(time.Millisecond), float64(len(sent))/took.Seconds())
		preps = append(preps, prepared{sub, client, tr, sent})
	}

	var res []streamBacklogRun
	for i, p := range preps {
		root := filepath.Join(c.dir, backlogs[i].name)
		var stdout, stderr bytes.Buffer
		job := c.command(c.ingestArgs(p.sub, root, "--idle-timeout", "10s", "--quiet")...)
		job.Stdout, job.Stderr = &stdout, &stderr
		start := time.Now()
		var peak func() int64
		err := streamRunWithin(t, job, 4*time.Minute, "ingest of "+backlogs[i].name, func() string { return lastLines(stderr.Bytes(), 40) }, func(pid int) {
			peak = streamSampleHWM(pid)
		})
		hwm := peak()
		if err != nil {
			t.Fatalf("ingest of %s: %v\n%s", backlogs[i].name, err, lastLines(stderr.Bytes(), 40))
		}
		r := streamBacklogRun{published: len(p.sent), in: streamTotalIn(t, stdout.String()), elapsed: time.Since(start), maxRSSKB: hwm}
		if r.maxRSSKB == 0 {
			t.Fatal("no VmHWM sample of the ingest process")
		}
		if ru, ok := job.ProcessState.SysUsage().(*syscall.Rusage); ok {
			// Not the measure: a child started with vfork (as os/exec
			// does) inherits the parent's high-water mark at exec, so
			// ru_maxrss is at least this test process's peak.
			t.Logf("%s: rusage maxrss %.1f MiB (includes the test process's own peak)", backlogs[i].name, float64(ru.Maxrss)/1024)
		}
		redelivered := r.in - int64(r.published)
		t.Logf("%s: ingest took in %d messages (%d published; %+d = %.3f%% redelivered) in %s (%.0f msg/s, idle timeout included); peak RSS %.1f MiB; %s",
			backlogs[i].name, r.in, r.published, redelivered, 100*float64(redelivered)/float64(r.published), r.elapsed.Round(time.Millisecond),
			float64(r.in)/r.elapsed.Seconds(), float64(r.maxRSSKB)/1024, streamRateLine.FindString(stdout.String()))
		if r.in < int64(r.published) {
			// The table is from runner metrics, which prism was seen to
			// drop an update of under load; the files below are exact.
			t.Logf("%s: the accounting table counts %d messages fewer than were published", backlogs[i].name, int64(r.published)-r.in)
		}
		if float64(redelivered) >= 0.01*float64(r.published) {
			t.Errorf("%s: %d redeliveries of %d messages (%.2f%%, by the accounting table), want < 1%%", backlogs[i].name, redelivered, r.published, 100*float64(redelivered)/float64(r.published))
		}
		// The same from the files: every delivery of a valid message is a
		// raw record, of an invalid one a dead letter.
		raw := streamRaw(t, ctx, root)
		var records int64
		for _, n := range raw.events {
			records += int64(n)
		}
		_, dead := streamDeadLetters(t, ctx, root)
		written := records + int64(dead)
		if extra := written - int64(r.published); float64(extra) >= 0.01*float64(r.published) || extra < 0 {
			t.Errorf("%s: %d raw records and %d dead letters for %d messages published (%d valid): %+d deliveries, want 0 <= n < 1%%",
				backlogs[i].name, records, dead, r.published, r.published-p.tr.Malformed, extra)
		} else {
			t.Logf("%s: %d raw records + %d dead letters for %d messages: %d redelivered and written again (%.3f%%)",
				backlogs[i].name, records, dead, r.published, extra, 100*float64(extra)/float64(r.published))
		}
		streamNothingLeft(t, ctx, p.client, p.sub, time.Second)
		res = append(res, r)

		// Every event published once, through the gated path.
		since, until := streamHourSpan(raw.hours)
		hstart := time.Now()
		code, hout := c.hourlySince(t, root, since, until)
		if code != 0 {
			t.Fatalf("%s: hourly --since %s: exit %d, want 0:\n%s", backlogs[i].name, layout.FormatHour(since), code, hout)
		}
		t.Logf("%s: hourly took %s", backlogs[i].name, time.Since(hstart).Round(time.Millisecond))
		// The user canaries only: the checker's scan indexes canaries by
		// their first four bytes, and 200k IP canaries share a handful.
		var canaries []string
		for _, cn := range p.tr.Canaries {
			if strings.HasPrefix(cn, "pii-") {
				canaries = append(canaries, cn)
			}
		}
		cstart := time.Now()
		invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: backlogs[i].name, Root: root, Sent: p.sent, Canaries: canaries,
			Logs: append(stderr.Bytes(), hout...)})
		t.Logf("%s: invariants checked in %s", backlogs[i].name, time.Since(cstart).Round(time.Millisecond))
	}
	small, large := res[0], res[1]
	ratio := float64(large.maxRSSKB) / float64(small.maxRSSKB)
	t.Logf("peak RSS: %.1f MiB with 20k, %.1f MiB with 200k (ratio %.2f, limit 1.20)", float64(small.maxRSSKB)/1024, float64(large.maxRSSKB)/1024, ratio)
	if ratio > 1.2 {
		t.Errorf("peak RSS with a 200k backlog is %.2f× the peak with 20k (%d KiB vs %d KiB): more than 20%% over; flow control does not bound memory", ratio, large.maxRSSKB, small.maxRSSKB)
	}
}

// streamSampleHWM samples the peak resident set size (VmHWM, KiB) of process
// pid every 20 ms until it exits; peak stops sampling and returns the
// largest value seen. VmHWM is the process's own high-water mark, so only
// growth in its last 20 ms can escape.
func streamSampleHWM(pid int) (peak func() int64) {
	var max atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if errors.Is(err, os.ErrNotExist) {
				return // reaped
			}
			if err == nil {
				for _, l := range strings.Split(string(data), "\n") {
					if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
						n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
						if n > max.Load() {
							max.Store(n)
						}
					}
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return max.Load()
	}
}

// streamPublishFast publishes msgs to topic with the v2 publisher's largest
// batches and returns them with their message ids, and how long it took.
func streamPublishFast(t *testing.T, ctx context.Context, client *pubsub.Client, topic string, msgs []record.Message) ([]record.Message, time.Duration) {
	t.Helper()
	pub := client.Publisher(topic)
	defer pub.Stop()
	pub.PublishSettings.CountThreshold = pubsub.MaxPublishRequestCount
	pub.PublishSettings.ByteThreshold = 4 << 20
	pub.PublishSettings.DelayThreshold = 20 * time.Millisecond
	pub.PublishSettings.FlowControlSettings = pubsub.FlowControlSettings{
		MaxOutstandingMessages: 50_000, MaxOutstandingBytes: -1, LimitExceededBehavior: pubsub.FlowControlBlock}
	start := time.Now()
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, m := range msgs {
		results[i] = pub.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes})
	}
	out := make([]record.Message, len(msgs))
	for i, r := range results {
		id, err := r.Get(ctx)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		out[i] = msgs[i]
		out[i].ID = id
	}
	return out, time.Since(start)
}

// TestAttributeCanaryNeverPlaintext: messages carry a PII canary in an
// extra message attribute; some have valid payloads, some invalid ones
// (dead-lettered: with a readable user, and without). After ingest and
// hourly the canary is in no object under the root and in no log line.
func TestAttributeCanaryNeverPlaintext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newStreamCLI(t)
	sub, publish, _ := scenarioPubSub(t, ctx, "attrcanary")
	root := filepath.Join(c.dir, "root")

	tr := synth.Generate(synth.Config{Events: 300, Users: 30, Hours: 1, Seed: 2205})
	var msgs []record.Message
	var canaries []string
	canary := func() string {
		cn := fmt.Sprintf("canary-attr-%04d@example.com", len(canaries))
		canaries = append(canaries, cn)
		return cn
	}
	withAttr := func(m record.Message) record.Message {
		a := map[string]string{"x-user-email": canary()}
		for k, v := range m.Attributes {
			a[k] = v
		}
		m.Attributes = a
		return m
	}
	// Every synth message (valid, duplicate or malformed) carries a canary.
	for _, m := range tr.Messages {
		msgs = append(msgs, withAttr(m))
	}
	// Invalid payloads of every kind: with a readable user (sealed under
	// the user's key) and without (truncated JSON, unknown type).
	pb := func(typ string, data string) record.Message {
		attrs := map[string]string{record.AttrSchemaVersion: "1"}
		if typ != "" {
			attrs[record.AttrEventType] = typ
		}
		return withAttr(record.Message{Attributes: attrs, Data: []byte(data)})
	}
	for i := 0; i < 10; i++ {
		u := synth.User(i)
		msgs = append(msgs,
			pb("PlaybackEvent", fmt.Sprintf(`{"event_id":"attr-bad-a-%d","user_id":%q,"timestamp":1,`, i, u)),
			pb("PlaybackEvent", fmt.Sprintf(`{"event_id":"attr-bad-b-%d","user_id":%q,"timestamp":1,"track_id":"t","ms_played":"lots","country":"SE","ip_address":"10.9.9.9","device_id":"d"}`, i, u)),
			pb("PlaybackEvent", fmt.Sprintf(`{"event_id":"attr-bad-c-%d","user_id":%q,"timestamp":1,"track_id":"t","ms_played":1,"country":"SE","device_id":"d"}`, i, u)),
			pb("PlaybackEvent", fmt.Sprintf(`{"event_id":"attr-bad-d-%d","user_id":%q,"timestamp":1,"track_id":"t","ms_played":1,"country":"SE","ip_address":"10.9.9.9","device_id":"d","shoe_size":44}`, i, u)),
			pb("NoSuchEvent", fmt.Sprintf(`{"user_id":%q}`, u)),
			pb("", fmt.Sprintf(`{"event_id":"attr-bad-f-%d","user_id":%q}`, i, u)),
		)
	}
	sent := publish(msgs)

	var logs lockedBuffer
	job := c.command(c.ingestArgs(sub, root, "--idle-timeout", "5s", "--log-level", "debug")...)
	job.Stdout, job.Stderr = &logs, &logs
	if err := streamRunWithin(t, job, 2*time.Minute, "ingest", func() string { return lastLines(logs.Bytes(), 40) }); err != nil {
		t.Fatalf("ingest: %v\n%s", err, lastLines(logs.Bytes(), 40))
	}
	raw := streamRaw(t, ctx, root)
	if len(raw.hours) == 0 {
		t.Fatalf("ingest wrote no raw data:\n%s", lastLines(logs.Bytes(), 40))
	}
	since, until := streamHourSpan(raw.hours)
	code, hout := c.hourlySince(t, root, since, until, "--log-level", "debug")
	logs.Write([]byte(hout))
	if code != 0 {
		t.Fatalf("hourly --since %s: exit %d, want 0:\n%s", layout.FormatHour(since), code, hout)
	}
	sealed, dead := streamDeadLetters(t, ctx, root)
	t.Logf("%d messages with an attribute canary; %d dead letters, %d of them with sealed attributes", len(msgs), dead, sealed)
	if dead == 0 {
		t.Fatal("no dead letters: the invalid messages were not dead-lettered")
	}
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "attribute-canary", Root: root, Sent: sent,
		Canaries: append(canaries, tr.Canaries...), Logs: logs.Bytes(), KeysURL: c.keys, Readable: []string{synth.IP(0)}})
}

// streamDeadLetters counts the dead letters under root and those that
// carry sealed attributes; it fails the test if one copies an attribute
// the contract does not name.
func streamDeadLetters(t *testing.T, ctx context.Context, root string) (sealed, dead int) {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.DeadLetterArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasSuffix(n, transforms.DeadLetterExt) {
			continue
		}
		data, err := blob.ReadAll(ctx, b, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var r record.Rejection
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			dead++
			if len(r.AttributesCiphertext) > 0 {
				sealed++
			}
			for k := range r.Attributes {
				if !slices.Contains([]string{record.AttrEventType, record.AttrSchemaVersion}, k) {
					t.Errorf("%s: dead letter of %s copies attribute %q in clear", n, r.MessageID, k)
				}
			}
		}
	}
	return sealed, dead
}
