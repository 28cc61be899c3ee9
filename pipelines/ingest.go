package pipelines

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/metrics"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/completion"
	_ "github.com/lockstream/lockstream/keyclient/local" // the local: key service for single-machine runs
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/transforms"
)

// IngestConfig configures Ingest. Exactly one of Inputs and Subscription is set.
type IngestConfig struct {
	Inputs       []string // replay files (NDJSON of the input message shape)
	Subscription string   // projects/P/subscriptions/S
	// PubSubEmulatorHost is a Pub/Sub emulator's host:port for the pull
	// streams; "" = $PUBSUB_EMULATOR_HOST, or Google Cloud when unset.
	PubSubEmulatorHost string
	Out                string // output root (directory or gs://bucket/prefix)
	KeysURL            string // local:DIR, http(s)://host:port, registered:NAME
	KeyScope           string // key-derivation scope; "" = transforms.DefaultKeyScope

	MaxPayload     int           // bytes; 0 = 1 MiB
	BatchSize      int           // messages per batch (one file per type and hour each; a key lookup per 500 messages); 0 = by source
	KeyRetryBudget time.Duration // 0 = transforms.DefaultKeyRetryBudget
	KeyCacheSize   int           // users' keys and built ciphers a worker keeps; 0 = transforms.DefaultKeyCacheSize

	// Pub/Sub only (see transforms.PubSubConfig for each).
	PubSubRead             string        // PubSubReadPull (default) or PubSubReadDataflow
	Streams                int           // parallel pull streams; 0 = transforms.DefaultPullStreams
	MaxOutstandingMessages int           // per worker; 0 = default
	MaxOutstandingBytes    int64         // per worker; 0 = default
	MaxDeliveryDelay       time.Duration // 0 = transforms.DefaultMaxDeliveryDelay
	AllowedLateness        time.Duration // an hour completes when the watermark passes its end + this; 0 = DefaultAllowedLateness, <0 = none
	IdleTimeout            time.Duration // drain after this long without messages; 0 = never
	StopAfter              time.Duration // planned stop after this long; 0 = never
	MaxMessages            int64         // planned stop after about this many; 0 = no limit
	StaleAfter             time.Duration // 0 = completion.DefaultStaleAfter
	// ExitBeforeComplete (tests): SIGKILL the process just before it writes
	// its first _COMPLETE marker.
	ExitBeforeComplete bool

	// Clock is the run's time (tests; zero = the system clock).
	Clock clock.Clock

	RunID string // prefix of every file name this run writes; "" = random; a used one is refused

	// Progress, when set, gets a line every ProgressEvery (default 10s):
	// events/s, written, dead-lettered, late, acked, hours closed.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Ways to read Pub/Sub (IngestConfig.PubSubRead).
const (
	// PubSubReadPull: lockstream's own source (transforms.IngestPubSub), on
	// any runner: parallel pull streams with flow control, leases kept
	// until the files are durable, then acked.
	PubSubReadPull = "pull"
	// PubSubReadDataflow: Beam's native Pub/Sub read, which only Dataflow
	// runs (it checkpoints, acks and dedupes by message id itself); see
	// transforms.WriteMessages for how it is batched.
	PubSubReadDataflow = "dataflow"
)

// DefaultAllowedLateness is the lateness streams run with by default: on
// top of the watermark (which already waits --max-delivery-delay for
// Pub/Sub), so that events are rarely routed to late/ in normal
// operation; an hour completes about this plus the delivery delay after
// its end.
const DefaultAllowedLateness = 2 * time.Minute

// Default IngestConfig.BatchSize by source. Every batch writes one raw file
// per (type, hour) it touches and one dead-letter file per reason, each
// fsynced before the batch counts as done, so files cost more than
// records: replay batches of 5000 instead of 1000 halved ingest time
// (BenchmarkEndToEnd, 214k messages: 6.6 s -> 3.3 s). A Pub/Sub batch is one
// Pull, at most 1000 messages.
const (
	DefaultBatchSize       = 1000 // Pub/Sub
	DefaultReplayBatchSize = 5000 // replay files
)

// ErrDryRun is returned after a dry run (the Dataflow runner's --dry_run):
// the job was built, validated and printed, not run; nothing was written.
var ErrDryRun = errors.New("pipelines: dry run: the job was built and printed, not submitted")

// IsDryRun reports whether the runner flags ask for a dry run.
func IsDryRun() bool {
	f := flag.Lookup("dry_run")
	return f != nil && f.Value.String() == "true"
}

// run runs p on the --runner flag's runner (prism by default); a dry run
// returns ErrDryRun. It then removes the empty files Beam leaves in the
// temporary directory for jobs run in loopback mode, once no job can
// still read them (sweepLoopbackFiles).
func run(ctx context.Context, p *beam.Pipeline) (beam.PipelineResult, error) {
	res, err := beamx.RunWithMetrics(ctx, p)
	sweepLoopbackFiles(os.TempDir(), time.Now().Add(-loopbackGrace))
	if err == nil && IsDryRun() {
		return nil, ErrDryRun
	}
	return res, err
}

// ErrConfig is wrapped by configuration errors (user errors).
var ErrConfig = errors.New("pipelines: bad ingest configuration")

func (c *IngestConfig) normalize() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	if (len(c.Inputs) == 0) == (c.Subscription == "") {
		return bad("give either input files or a subscription (exactly one)")
	}
	if c.Out == "" {
		return bad("no output root")
	}
	if err := transforms.ValidateKeysURL(c.KeysURL); err != nil {
		return bad("%v", err)
	}
	if c.MaxPayload < 0 {
		return bad("max payload %d < 0", c.MaxPayload)
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultReplayBatchSize
		if c.Subscription != "" {
			c.BatchSize = DefaultBatchSize
		}
	}
	limit := transforms.MaxBatchSize
	if c.Subscription != "" {
		limit = transforms.MaxPullSize
	}
	if c.BatchSize < 1 || c.BatchSize > limit {
		return bad("batch size %d not in 1..%d", c.BatchSize, limit)
	}
	if c.IdleTimeout < 0 || c.KeyRetryBudget < 0 || c.MaxMessages < 0 || c.KeyCacheSize < 0 || c.StopAfter < 0 ||
		c.MaxDeliveryDelay < 0 || c.Streams < 0 || c.MaxOutstandingMessages < 0 || c.MaxOutstandingBytes < 0 || c.StaleAfter < 0 {
		return bad("durations and counts must not be negative")
	}
	if c.Subscription == "" && (c.IdleTimeout > 0 || c.MaxMessages > 0 || c.StopAfter > 0 || c.Streams > 0 || c.MaxOutstandingMessages > 0 ||
		c.MaxOutstandingBytes > 0 || c.MaxDeliveryDelay > 0 || c.PubSubRead != "") {
		return bad("idle timeout, stop after, max messages, streams, flow control, delivery delay and the Pub/Sub read apply to a subscription only")
	}
	switch c.PubSubRead {
	case "":
		if c.Subscription != "" {
			c.PubSubRead = PubSubReadPull
		}
	case PubSubReadPull, PubSubReadDataflow:
	default:
		return bad("Pub/Sub read %q: want %s or %s", c.PubSubRead, PubSubReadPull, PubSubReadDataflow)
	}
	switch {
	case c.AllowedLateness == 0:
		c.AllowedLateness = DefaultAllowedLateness
	case c.AllowedLateness < 0:
		c.AllowedLateness = 0
	}
	if c.RunID == "" {
		c.RunID = NewRunID()
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 10 * time.Second
	}
	return nil
}

// BuildIngest adds the ingest pipeline to s (exported for tests and for
// runners that submit pipelines without running them here).
func BuildIngest(s beam.Scope, cfg IngestConfig) error {
	if err := cfg.normalize(); err != nil {
		return err
	}
	return buildIngest(s, cfg)
}

func buildIngest(s beam.Scope, cfg IngestConfig) error {
	write := transforms.WriteConfig{
		Root: cfg.Out, KeysURL: cfg.KeysURL, KeyScope: cfg.KeyScope, MaxPayload: cfg.MaxPayload, RunID: cfg.RunID,
		KeyRetryBudget: cfg.KeyRetryBudget, KeyCacheSize: cfg.KeyCacheSize,
		// Per-hour counters feed the accounting table of a run whose
		// metrics end with it; on Dataflow counters are monitoring series,
		// which must not grow with every hour.
		HourCounters: !onDataflow(),
	}
	var files beam.PCollection
	var err error
	switch {
	case cfg.PubSubRead == PubSubReadDataflow:
		files, err = transforms.IngestPubSubDataflow(s, transforms.PubSubDataflowConfig{
			Subscription: cfg.Subscription, BatchSize: cfg.BatchSize, Lateness: cfg.AllowedLateness,
			StaleAfter: cfg.StaleAfter, Write: write,
		})
	case cfg.Subscription != "":
		files, err = transforms.IngestPubSub(s, transforms.PubSubConfig{
			Subscription: cfg.Subscription, EmulatorHost: cfg.PubSubEmulatorHost, BatchSize: cfg.BatchSize, Streams: cfg.Streams,
			MaxOutstandingMessages: cfg.MaxOutstandingMessages, MaxOutstandingBytes: cfg.MaxOutstandingBytes,
			MaxDeliveryDelay: cfg.MaxDeliveryDelay, Lateness: cfg.AllowedLateness, IdleTimeout: cfg.IdleTimeout,
			StopAfter: cfg.StopAfter, MaxMessages: cfg.MaxMessages, StaleAfter: cfg.StaleAfter, Clock: cfg.Clock,
			Write: write, ExitBeforeComplete: cfg.ExitBeforeComplete,
		})
	default:
		var batches beam.PCollection
		batches, err = transforms.ReadReplay(s, transforms.ReplayConfig{
			Files: cfg.Inputs, BatchSize: cfg.BatchSize, RunID: cfg.RunID, Fallback: cfg.Clock.Now(),
		})
		if err == nil {
			files, err = transforms.AnonymizeAndWrite(s, batches, write)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	transforms.EndBranch(s, files)
	return nil
}

// Ingest builds the ingest pipeline and runs it with the runner of the
// --runner flag (prism by default), then returns its accounting. It claims
// its run id first (a used one is refused: ErrConfig); a replay run keeps
// its writer record (writers/<run>/replay.json) while it runs and, when
// it finishes, observes the completion of the hours it wrote. A Pub/Sub
// run's streams keep their own records.
func Ingest(ctx context.Context, cfg IngestConfig) (*IngestResult, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	p, s := beam.NewPipelineWithRoot()
	if err := buildIngest(s, cfg); err != nil {
		return nil, err
	}
	dry := IsDryRun()
	var b blob.Bucket
	var rec *completion.Record
	stopBeat := func(string, string) error { return nil }
	if !dry {
		var err error
		if b, err = blob.Open(ctx, cfg.Out); err != nil {
			return nil, err
		}
		source := "replay"
		if cfg.Subscription != "" {
			source = cfg.Subscription
		}
		host, _ := os.Hostname()
		if err := completion.Claim(ctx, b, completion.RunInfo{RunID: cfg.RunID, Source: source, StartedAt: cfg.Clock.Now(), Host: host}); err != nil {
			if errors.Is(err, completion.ErrRunIDUsed) {
				return nil, fmt.Errorf("%w: %v", ErrConfig, err)
			}
			return nil, err
		}
		if cfg.Subscription == "" {
			rec = &completion.Record{RunID: cfg.RunID, Part: "replay", Kind: completion.KindBounded, Source: source,
				State: completion.StateRunning, StaleAfter: completion.Duration(cmp.Or(cfg.StaleAfter, completion.DefaultStaleAfter)),
				StartedAt: cfg.Clock.Now()}
			if stopBeat, err = keepRecord(ctx, b, rec, cfg.Clock); err != nil {
				return nil, err
			}
		}
	}

	start := time.Now()
	stop := startProgress(cfg.Progress, cfg.ProgressEvery, start)
	res, err := run(ctx, p)
	stop()
	// The keys and ciphers the run cached are of no use to what this
	// process does next (see transforms.DropKeyCaches).
	transforms.DropKeyCaches()
	if errors.Is(err, ErrDryRun) {
		return nil, err
	}
	if err != nil {
		if berr := stopBeat(completion.StateFailed, err.Error()); berr != nil {
			err = errors.Join(err, berr)
		}
		return nil, fmt.Errorf("pipelines: ingest run %s: %w", cfg.RunID, err)
	}
	if err := stopBeat(completion.StateFinished, "read all input"); err != nil {
		return nil, err
	}
	out := &IngestResult{RunID: cfg.RunID, Elapsed: time.Since(start)}
	if counts, ok := transforms.TakeRunCounters(cfg.Out, cfg.RunID); ok {
		// The writers ran in this process: their own counts are exact
		// where prism's metrics can lose updates (TakeRunCounters).
		out.Rows, out.Keys = accountingFromCounters(counts), keyActivityFromCounters(counts)
	} else if res != nil {
		out.Rows, out.Keys = accountingFromMetrics(res.Metrics()), keyActivityFromMetrics(res.Metrics())
	}
	if b != nil {
		// Whoever observes completion marks it: the hours this run (or an
		// earlier one) left open may be complete now.
		hours, err := completion.Open(ctx, b)
		if err != nil {
			return nil, err
		}
		o := &completion.Observer{Bucket: b, Name: cfg.RunID, Now: cfg.Clock.Now}
		if out.Hours, err = o.Observe(ctx, hours); err != nil {
			return nil, err
		}
		// Old runs' records can decide nothing any more; a failure here
		// only leaves them for the next run.
		_, _ = completion.Prune(ctx, b, cfg.Clock.Now(), completion.DefaultKeepRecords)
	}
	return out, nil
}

// RequestStop asks the Pub/Sub streams of a run for a planned stop: it
// creates the run's stop object under the root, which every stream looks
// for at its next heartbeat.
func RequestStop(ctx context.Context, root, runID string) error {
	b, err := blob.Open(ctx, root)
	if err != nil {
		return err
	}
	err = blob.WriteAll(ctx, b, layout.WriterStop(runID), nil)
	if errors.Is(err, blob.ErrExist) {
		return nil
	}
	return err
}

// keepRecord writes a bounded run's record and rewrites it (its heartbeat)
// until the returned end is called with the run's final state.
func keepRecord(ctx context.Context, b blob.Bucket, rec *completion.Record, clk clock.Clock) (end func(state, note string) error, err error) {
	var mu sync.Mutex
	write := func(state, note string) error {
		mu.Lock()
		defer mu.Unlock()
		rec.State, rec.Note, rec.HeartbeatAt = state, note, clk.Now()
		return completion.Write(context.WithoutCancel(ctx), b, rec)
	}
	if err := write(completion.StateRunning, ""); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := clk.NewTicker(recordEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = write(completion.StateRunning, "") // a missed beat is retried at the next
			}
		}
	}()
	return func(state, note string) error {
		close(done)
		<-finished
		if len(note) > 200 {
			note = note[:200]
		}
		return write(state, note)
	}, nil
}

// recordEvery is how often a replay run rewrites its record.
const recordEvery = 10 * time.Second

// IngestResult is the accounting of one ingest run.
type IngestResult struct {
	RunID   string
	Elapsed time.Duration
	Rows    []AccountRow // by type, version, hour (one row per type and version, of zero Hour, on Dataflow)
	Keys    KeyActivity
	// Hours are the open hours of the root as the run's end found them:
	// complete (and marked) or waiting, and why.
	Hours []completion.Decision
}

// KeyActivity is what the workers' key caches did in a run (runner
// metrics; see transforms.CountKeyLookups). A low share of lookups from
// the cache over a long run, or many ciphers built per user, says the
// cache is too small for the run's users (--key-cache-size).
type KeyActivity struct {
	Lookups      int64 // users looked up (one per user and batch)
	CacheHits    int64 // of them, answered from the key client's cache
	Calls        int64 // key-service calls, retries included
	CipherHits   int64 // ciphers found built
	CiphersBuilt int64
}

func keyActivityFromMetrics(m metrics.Results) KeyActivity {
	counts := map[string]int64{}
	for _, c := range m.AllMetrics().Counters() {
		if c.Namespace() == transforms.MetricsNamespace {
			counts[c.Name()] += c.Result()
		}
	}
	return keyActivityFromCounters(counts)
}

// keyActivityFromCounters reads the key counters among the write stage's
// counters (by name).
func keyActivityFromCounters(counts map[string]int64) KeyActivity {
	return KeyActivity{
		Lookups: counts[transforms.CountKeyLookups], CacheHits: counts[transforms.CountKeyCacheHits],
		Calls: counts[transforms.CountKeyCalls], CipherHits: counts[transforms.CountCipherHits],
		CiphersBuilt: counts[transforms.CountCiphersBuilt],
	}
}

// String is one line: "keys: N user lookups, P% from the workers' caches,
// C key-service calls; ciphers: B built, Q% of uses already built".
func (k KeyActivity) String() string {
	pct := func(part, whole int64) float64 {
		if whole == 0 {
			return 0
		}
		return 100 * float64(part) / float64(whole)
	}
	return fmt.Sprintf("keys: %d user lookups, %.1f%% from the workers' caches, %d key-service calls; ciphers: %d built, %.1f%% of uses already built",
		k.Lookups, pct(k.CacheHits, k.Lookups), k.Calls, k.CiphersBuilt, pct(k.CipherHits, k.CipherHits+k.CiphersBuilt))
}

// AccountRow is the accounting of one (type, version, hour) of a run:
// In = Written + sum(Dead) + Late. Type "" collects messages whose type is
// unknown (bad lines, unknown event types).
type AccountRow struct {
	Type    string
	Version int
	Hour    time.Time
	In      int64
	Written int64 // raw records (duplicates from redelivery included)
	Dead    map[string]int64
	Late    int64
}

// DeadTotal sums Dead.
func (r AccountRow) DeadTotal() int64 {
	var n int64
	for _, c := range r.Dead {
		n += c
	}
	return n
}

// Totals sums all rows.
func (r *IngestResult) Totals() AccountRow {
	t := AccountRow{Dead: map[string]int64{}}
	for _, row := range r.Rows {
		t.In += row.In
		t.Written += row.Written
		t.Late += row.Late
		for k, v := range row.Dead {
			t.Dead[k] += v
		}
	}
	return t
}

// onDataflow reports whether the --runner flag names Dataflow.
func onDataflow() bool {
	f := flag.Lookup("runner")
	return f != nil && strings.EqualFold(f.Value.String(), "dataflow")
}

// accountingFromMetrics builds the accounting rows from the write stage's
// counters in the runner's metrics (accountingFromCounters).
func accountingFromMetrics(m metrics.Results) []AccountRow {
	counts := map[string]int64{}
	for _, c := range m.AllMetrics().Counters() {
		if c.Namespace() == transforms.MetricsNamespaceHours || c.Namespace() == transforms.MetricsNamespace {
			counts[c.Name()] += c.Result() // one counter per step that reported it
		}
	}
	return accountingFromCounters(counts)
}

// accountingFromCounters builds the accounting rows from the write stage's
// per-hour counters (transforms.HourCounterName); a run without them
// (Dataflow) gets one row per type and version, of zero Hour, from the
// bounded counters (transforms.CounterName).
func accountingFromCounters(counts map[string]int64) []AccountRow {
	fields := 3
	for name := range counts {
		if strings.Count(name, "|") == 3 {
			fields = 4
			break
		}
	}
	rows := map[transforms.HourKey3]*AccountRow{}
	for name, n := range counts {
		p := strings.Split(name, "|")
		if len(p) != fields {
			continue
		}
		v, _ := strconv.Atoi(p[2])
		var h time.Time
		if fields == 4 {
			var err error
			if h, err = layout.ParseHour(p[3]); err != nil {
				continue
			}
		}
		k := transforms.HourKey3{Type: p[1], Version: v, HourMillis: h.UnixMilli()}
		r := rows[k]
		if r == nil {
			r = &AccountRow{Type: p[1], Version: v, Hour: h, Dead: map[string]int64{}}
			rows[k] = r
		}
		switch kind := p[0]; {
		case kind == transforms.CountIn:
			r.In += n
		case kind == transforms.CountWritten:
			r.Written += n
		case kind == transforms.CountLate:
			r.Late += n
		case strings.HasPrefix(kind, transforms.CountDead):
			r.Dead[strings.TrimPrefix(kind, transforms.CountDead)] += n
		}
	}
	out := make([]AccountRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if a.Version != b.Version {
			return a.Version < b.Version
		}
		return a.Hour.Before(b.Hour)
	})
	return out
}

// WriteTable prints the accounting as a table.
func (r *IngestResult) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%-16s %-3s %-13s %9s %9s %9s %7s  %s\n", "TYPE", "V", "HOUR", "IN", "WRITTEN", "DEAD", "LATE", "DEAD BY REASON")
	row := func(typ, v, hour string, a AccountRow) {
		var reasons []string
		for k, n := range a.Dead {
			reasons = append(reasons, fmt.Sprintf("%s=%d", k, n))
		}
		sort.Strings(reasons)
		fmt.Fprintf(w, "%-16s %-3s %-13s %9d %9d %9d %7d  %s\n", typ, v, hour, a.In, a.Written, a.DeadTotal(), a.Late, strings.Join(reasons, " "))
	}
	for _, a := range r.Rows {
		typ, v := a.Type, strconv.Itoa(a.Version)
		if typ == "" {
			typ, v = "(unknown)", "-"
		}
		hour := "-" // a run without per-hour counters (Dataflow)
		if !a.Hour.IsZero() {
			hour = layout.FormatHour(a.Hour)
		}
		row(typ, v, hour, a)
	}
	row("TOTAL", "", "", r.Totals())
	t := r.Totals()
	if secs := r.Elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(w, "run %s: %d messages in %s (%.0f/s)\n", r.RunID, t.In, r.Elapsed.Round(time.Millisecond), float64(t.In)/secs)
	}
	if r.Keys.Lookups > 0 {
		fmt.Fprintln(w, r.Keys)
	}
	var complete, waiting int
	for _, d := range r.Hours {
		if d.Complete {
			complete++
		} else {
			waiting++
		}
	}
	if len(r.Hours) > 0 {
		fmt.Fprintf(w, "hours: %d complete, %d open\n", complete, waiting)
		for _, d := range r.Hours {
			if !d.Complete {
				fmt.Fprintf(w, "  open %s: %s\n", d.Hour, d.Reason)
			}
		}
	}
}

func startProgress(w io.Writer, every time.Duration, start time.Time) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		var last transforms.Progress
		lastAt := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				p := transforms.ReadProgress()
				rate := float64(p.Messages-last.Messages) / now.Sub(lastAt).Seconds()
				fmt.Fprintf(w, "ingest %s: %d messages (%.0f/s), %d written, %d dead-lettered, %d late, %d acked (%d ack failures), %d held for redelivery, %d hours closed\n",
					now.Sub(start).Round(time.Second), p.Messages, rate, p.Written, p.DeadLetters, p.Late, p.Acked, p.AckFailed, p.Held, p.HoursClosed)
				last, lastAt = p, now
			}
		}
	}()
	return func() { close(done); <-finished }
}
