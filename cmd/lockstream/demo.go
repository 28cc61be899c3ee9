package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/keyclient/local"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/status"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

func init() { register(newDemoCmd) }

type demoFlags struct {
	out      string
	events   int
	users    int
	seed     uint64
	logLevel string
	pubsub   string
}

func newDemoCmd() *cobra.Command {
	f := demoFlags{}
	c := &cobra.Command{
		Use:   "demo [--out DIR]",
		Short: "Run the whole job on this machine: synthetic traffic → ingest → hourly → view → shred → view",
		Long: `demo needs no cloud account. In DIR it creates an embedded key store (DIR/keys),
generates three hours of synthetic traffic for both event types (about 5% duplicates,
including redeliveries and retries that cross an hour boundary, 1% malformed messages, and
late events), runs ingest on the Beam prism runner and hourly for every complete hour, then
ingests the late events and publishes them as supplements of their hours, and runs view;
then deletes one user, revokes the "contact" category of another, runs view again and shows
what an analyst sees before and after. DIR/data holds every output; inspect it with
  lockstream inspect DIR/data/datasets/<type>/v1/<day>/<hour>
It ends by writing the status page of DIR/data, DIR/status.html (lockstream status --format html),
and printing its path.

With a Pub/Sub emulator ($PUBSUB_EMULATOR_HOST, or the gcloud SDK's pubsub-emulator, which the demo
then starts), the traffic goes through Pub/Sub: lockstream publish's load generator sends it to a
topic and ingest reads the subscription until it is idle (the records' hours are then the hours
Pub/Sub published them in); --pubsub files keeps to replay files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	c.Flags().StringVar(&f.out, "out", "./demo-out", "directory for the key store, the input files and every output (replaced)")
	c.Flags().IntVar(&f.events, "events", 6000, "unique events to generate")
	c.Flags().IntVar(&f.users, "users", 300, "distinct users")
	c.Flags().Uint64Var(&f.seed, "seed", 1, "seed of the synthetic traffic")
	c.Flags().StringVar(&f.pubsub, "pubsub", demoPubSubAuto, "feed ingest through the Pub/Sub emulator (emulator), replay files (files), or the emulator when one is found (auto)")
	addLogLevelFlag(c.Flags(), &f.logLevel)
	return c
}

// demoEnv is what the demo steps share.
type demoEnv struct {
	dir, root string
	svc       *keyservice.Service
	out, log  io.Writer
	traffic   *synth.Traffic
	hours     []time.Time
}

func runDemo(ctx context.Context, stdout, stderr io.Writer, f demoFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := initBeam(f.logLevel); err != nil {
		return err
	}
	if f.out == "" || f.out == "/" {
		return errors.New("--out must name a directory")
	}
	if f.pubsub == "" {
		f.pubsub = demoPubSubAuto
	}
	if err := demoPubSubMode(f.pubsub); err != nil {
		return err
	}
	start := time.Now()
	dir, err := filepath.Abs(f.out)
	if err != nil {
		return err
	}
	// The demo owns DIR: start from a clean slate every time.
	for _, sub := range []string{"keys", "data", "input", "view"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	env := &demoEnv{dir: dir, root: filepath.Join(dir, "data"), out: stdout, log: stderr}
	step := func(format string, a ...any) {
		fmt.Fprintf(stdout, "\n== %s (%.1fs)\n", fmt.Sprintf(format, a...), time.Since(start).Seconds())
	}

	step("key service: embedded store in %s", filepath.Join(dir, "keys"))
	keysDir := filepath.Join(dir, "keys")
	if _, _, err := local.InitMasterKey(keysDir); err != nil {
		return err
	}
	master, err := local.MasterKey(keysDir, "")
	if err != nil {
		return err
	}
	env.svc, err = local.OpenService(keysDir, master, nil)
	if err != nil {
		return err
	}
	defer env.svc.Close()

	step("synthetic traffic: %d events, %d users, 3 hours", f.events, f.users)
	// PlaybackEvents of v3: their device_ref is encrypted deterministically
	// (AES-SIV), so equal references of a user have equal ciphertexts.
	env.traffic = synth.Generate(synth.Config{Events: f.events, Users: f.users, Seed: f.seed, PlaybackVersion: demoPlaybackVersion})
	main, late := splitLate(env.traffic)
	mainFile := filepath.Join(dir, "input", "events.ndjson")
	lateFile := filepath.Join(dir, "input", "late.ndjson")
	if err := writeReplay(mainFile, main); err != nil {
		return err
	}
	if err := writeReplay(lateFile, late); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d messages (%d duplicate deliveries, %d malformed) in %s\n%d more arrive after their hour closed, in %s\n",
		len(main), env.traffic.Duplicates, env.traffic.Malformed, rel(mainFile), len(late), rel(lateFile))
	for _, m := range main {
		h := record.Hour(m.PublishTime)
		if len(env.hours) == 0 || !env.hours[len(env.hours)-1].Equal(h) {
			env.hours = append(env.hours, h)
		}
	}

	keysURL, err := env.keys("demo-ingest")
	if err != nil {
		return err
	}
	ps, err := openDemoPubSub(f.pubsub, stderr)
	if err != nil {
		return err
	}
	ingest := func(file string, msgs []record.Message) (*pipelines.IngestResult, error) {
		if ps == nil {
			return pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{file}, Out: env.root, KeysURL: keysURL, Progress: stderr})
		}
		sub, err := ps.publish(ctx, stdout, "events", msgs)
		if err != nil {
			return nil, err
		}
		return pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: env.root, KeysURL: keysURL, Progress: stderr,
			IdleTimeout: 3 * time.Second, ProgressEvery: 5 * time.Second})
	}
	if ps != nil {
		defer ps.stop()
		step("publish %s to the Pub/Sub emulator (%s) with lockstream publish's load generator; ingest its subscription (prism runner)", rel(mainFile), ps.host)
		env.hours = env.hours[:0]
	} else {
		step("ingest %s → %s (prism runner)", rel(mainFile), rel(env.root))
	}
	started := time.Now()
	res, err := ingest(mainFile, main)
	if err != nil {
		return err
	}
	res.WriteTable(stdout)
	if ps != nil {
		// Pub/Sub stamps the publish times: the hours are this run's.
		for h := record.Hour(started); !h.After(record.Hour(time.Now())); h = h.Add(time.Hour) {
			env.hours = append(env.hours, h)
		}
	}

	if err := demoPublish(ctx, env); err != nil {
		return err
	}

	step("ingest the late arrivals (their hours are complete: routed to late/)")
	if res, err = ingest(lateFile, late); err != nil {
		return err
	}
	res.WriteTable(stdout)
	if ps != nil {
		if h := record.Hour(time.Now()); h.After(env.hours[len(env.hours)-1]) {
			env.hours = append(env.hours, h)
		}
	}
	if err := demoSupplements(ctx, env); err != nil {
		return err
	}

	// Two users an analyst will look at: the most active ones.
	alice, bob := busiestUsers(env.traffic)
	before, err := demoView(ctx, env, "before")
	if err != nil {
		return err
	}

	// User ids are personal data: the demo names them A and B, never by id.
	step("shred: delete user A (the busiest account); revoke category \"contact\" for user B")
	subA, subB, err := env.shred(ctx, alice, bob)
	if err != nil {
		return err
	}
	after, err := demoView(ctx, env, "after")
	if err != nil {
		return err
	}

	step("what an analyst sees (their records are joined by _subject, never by user id)")
	showAnalyst(stdout, "user A (deleted)", subA, before, after)
	showAnalyst(stdout, "user B (contact revoked)", subB, before, after)

	var published int64
	b, err := blob.Open(ctx, env.root)
	if err != nil {
		return err
	}
	for _, hr := range env.hours {
		for _, typ := range []string{"AccountUpdate", "PlaybackEvent"} {
			if d, err := dataset.Read(ctx, b, layout.Hour{Type: typ, Version: demoVersion(typ), Hour: hr}); err == nil {
				published += d.Records() // the main part and its supplements
			}
		}
	}
	step("accounting")
	fmt.Fprintf(stdout, "sent %d messages: %d distinct valid events, %d duplicate deliveries, %d malformed\npublished %d records (each event once, across hours); malformed ones are in %s\n",
		len(main)+len(late), env.traffic.Unique, env.traffic.Duplicates, env.traffic.Malformed, published, rel(filepath.Join(env.root, "deadletter")))
	if published != int64(env.traffic.Unique) {
		return fmt.Errorf("demo: published %d records for %d distinct events", published, env.traffic.Unique)
	}
	page := filepath.Join(dir, "status.html")
	step("status page: lockstream status --root %s --since %s --format html --out %s", rel(env.root), layout.FormatHour(env.hours[0]), rel(page))
	if err := demoStatusPage(ctx, b, env, page); err != nil {
		return err
	}
	step("done in %.1fs; outputs under %s", time.Since(start).Seconds(), rel(dir))
	fmt.Fprintf(stdout, "status page: %s\n", rel(page))
	return nil
}

// demoStatusPage writes the status page of the demo's hours.
func demoStatusPage(ctx context.Context, b blob.Bucket, env *demoEnv, page string) error {
	r, err := status.Build(ctx, b, status.Options{Since: env.hours[0], Until: env.hours[len(env.hours)-1].Add(time.Hour)})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := status.WriteHTML(&buf, r, status.HTMLOptions{Root: rel(env.root)}); err != nil {
		return err
	}
	if err := writeFileAtomic(page, buf.Bytes()); err != nil {
		return err
	}
	states := map[string]int{}
	for _, h := range r.Hours {
		states[h.State]++
	}
	fmt.Fprintf(env.out, "%d hours: %d published, %d published with supplements, %d complete, %d waiting, %d stuck; %d lines need attention\n",
		len(r.Hours)-states[status.StateDeadLetters], states[status.StatePublished], states[status.StateSupplemented], states[status.StateComplete],
		states[status.StateWaiting], states[status.StateStuck], len(r.Attention))
	return nil
}

// keys registers a fresh client over the demo's key service for the
// pipelines of this process (a fresh one has no cached keys).
func (e *demoEnv) keys(name string) (string, error) {
	o, err := transforms.KeyOptions(transforms.DefaultKeyScope)
	if err != nil {
		return "", err
	}
	c, err := local.New(e.svc, o)
	if err != nil {
		return "", err
	}
	return transforms.RegisterKeys(name, c), nil
}

// shred deletes user a and revokes "contact" for user b, returning their
// subjects (looked up before, as an operator would from a request).
func (e *demoEnv) shred(ctx context.Context, a, b string) (string, string, error) {
	ia, err := e.svc.Show(ctx, a)
	if err != nil {
		return "", "", err
	}
	ib, err := e.svc.Show(ctx, b)
	if err != nil {
		return "", "", err
	}
	if err := e.svc.DeleteUser(ctx, a); err != nil {
		return "", "", err
	}
	if err := e.svc.Revoke(ctx, b, "contact"); err != nil {
		return "", "", err
	}
	return ia.Subject, ib.Subject, nil
}

// splitLate moves a few valid events of the first hour to a second file:
// re-published after the first ingest has closed that hour.
func splitLate(tr *synth.Traffic) (main, late []record.Message) {
	first := record.Hour(tr.Messages[0].PublishTime)
	for i, m := range tr.Messages {
		if i%97 == 5 && record.Hour(m.PublishTime).Equal(first) && strings.Contains(string(m.Data), `"event_id":"ev-`) {
			m.ID += "-late"
			late = append(late, m)
			continue
		}
		main = append(main, m)
	}
	return main, late
}

func writeReplay(path string, msgs []record.Message) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, m := range msgs {
		line, err := m.MarshalLine()
		if err != nil {
			f.Close()
			return err
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func busiestUsers(tr *synth.Traffic) (string, string) {
	n := map[string]int{}
	for _, m := range tr.Messages {
		s := string(m.Data)
		i := strings.Index(s, `"user_id":"`)
		if i < 0 || !strings.Contains(s, `"email"`) {
			continue // users with account updates show every category
		}
		rest := s[i+len(`"user_id":"`):]
		if j := strings.IndexByte(rest, '"'); j > 0 {
			n[rest[:j]]++
		}
	}
	users := make([]string, 0, len(n))
	for u := range n {
		users = append(users, u)
	}
	sort.Slice(users, func(i, j int) bool {
		return n[users[i]] > n[users[j]] || n[users[i]] == n[users[j]] && users[i] < users[j]
	})
	return users[0], users[1]
}

func rel(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
		return "./" + r
	}
	return p
}

// demoPublish runs hourly for every (type, version) of every hour.
func demoPublish(ctx context.Context, env *demoEnv) error {
	fmt.Fprintf(env.out, "\n== hourly: publish every closed hour (dedupe, lookback 1h, manifest, _SUCCESS)\n")
	b, err := blob.Open(ctx, env.root)
	if err != nil {
		return err
	}
	f := hourlyFlags{root: env.root, lookback: time.Hour, shards: 2, keyScope: transforms.DefaultKeyScope}
	last := env.hours[len(env.hours)-1].Add(time.Hour)
	if _, _, err := publishRange(ctx, b, env.out, env.log, f, env.hours[0], last, time.Hour, nil); err != nil {
		return err
	}
	fmt.Fprintln(env.out, "re-run of the same hours (idempotent: nothing is rewritten):")
	_, _, err = publishRange(ctx, b, env.out, env.log, f, env.hours[0], env.hours[0].Add(time.Hour), time.Hour, nil)
	return err
}

// demoSupplements publishes the late arrivals as supplements of their
// (published) hours, then shows a re-run adds nothing.
func demoSupplements(ctx context.Context, env *demoEnv) error {
	fmt.Fprintf(env.out, "\n== hourly again: late events become numbered supplements of their hours (late-0001/), deduplicated\n")
	b, err := blob.Open(ctx, env.root)
	if err != nil {
		return err
	}
	f := hourlyFlags{root: env.root, lookback: time.Hour, shards: 2, keyScope: transforms.DefaultKeyScope}
	last := env.hours[len(env.hours)-1].Add(time.Hour)
	for round := 0; round < 2; round++ {
		if round == 1 {
			fmt.Fprintln(env.out, "re-run (nothing pending: no new supplement):")
		}
		if _, _, err := publishRange(ctx, b, env.out, env.log, f, env.hours[0], last, time.Hour, nil); err != nil {
			return err
		}
	}
	return nil
}

// viewRows are decrypted records by _subject, then "Type" → first record.
type viewRows map[string]map[string]map[string]any

// demoView decrypts every published hour with a fresh key client.
func demoView(ctx context.Context, env *demoEnv, label string) (viewRows, error) {
	fmt.Fprintf(env.out, "\n== view (%s): decrypt every published hour into %s\n", label, rel(filepath.Join(env.dir, "view", label)))
	keysURL, err := env.keys("demo-view-" + label)
	if err != nil {
		return nil, err
	}
	rows := viewRows{}
	for _, hr := range env.hours {
		for _, typ := range []string{"AccountUpdate", "PlaybackEvent"} {
			out := filepath.Join(env.dir, "view", label, fmt.Sprintf("%s-%s.ndjson", typ, layout.FormatHour(hr)))
			res, err := pipelines.View(ctx, pipelines.ViewConfig{Root: env.root, Type: typ, Version: demoVersion(typ), Hour: hr, Out: out, KeysURL: keysURL})
			if errors.Is(err, pipelines.ErrNotPublished) {
				continue
			}
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(env.out, "%-14s %s: %5d records, %3d with shredded fields, %d corrupt\n", typ, layout.FormatHour(hr), res.Records, res.ShreddedRecords, res.CorruptRecords)
			if err := readViewRows(out, typ, rows); err != nil {
				return nil, err
			}
		}
	}
	return rows, nil
}

func readViewRows(path, typ string, rows viewRows) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return err
		}
		sub, _ := m["_subject"].(string)
		if rows[sub] == nil {
			rows[sub] = map[string]map[string]any{}
		}
		if rows[sub][typ] == nil {
			rows[sub][typ] = m
		}
	}
	return sc.Err()
}

func showAnalyst(w io.Writer, label, subject string, before, after viewRows) {
	fmt.Fprintf(w, "%s, _subject %s:\n", label, subject)
	for _, typ := range []string{"AccountUpdate", "PlaybackEvent"} {
		b, a := before[subject][typ], after[subject][typ]
		if b == nil {
			continue
		}
		var fields []string
		switch typ {
		case "AccountUpdate":
			fields = []string{"email", "display_name", "birth_year"}
		default:
			fields = []string{"ip_address", "device_id", "device_ref", "track_id"}
		}
		fmt.Fprintf(w, "  %s event %v\n", typ, b["event_id"])
		for _, f := range fields {
			fmt.Fprintf(w, "    %-13s before: %-32v after: %v\n", f, show(b[f]), show(a[f]))
		}
	}
}

// demoPlaybackVersion is the PlaybackEvent version of the demo's traffic.
const demoPlaybackVersion = 3

// demoVersion is the schema version of the demo's events of a type.
func demoVersion(typ string) int {
	if typ == "PlaybackEvent" {
		return demoPlaybackVersion
	}
	return 1
}

func show(v any) string {
	if v == nil {
		return "NULL"
	}
	return fmt.Sprint(v)
}
