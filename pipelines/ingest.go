package pipelines

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/metrics"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	_ "github.com/lockstream/lockstream/keyclient/local" // the local: key service for single-machine runs
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/transforms"
)

// IngestConfig configures Ingest. Exactly one of Inputs and Subscription is set.
type IngestConfig struct {
	Inputs       []string // replay files (NDJSON of the input message shape)
	Subscription string   // projects/P/subscriptions/S
	Out          string   // output root (directory or gs://bucket/prefix)
	KeysURL      string   // local:DIR, http(s)://host:port, registered:NAME
	KeyScope     string   // key-derivation scope; "" = transforms.DefaultKeyScope

	MaxPayload      int           // bytes; 0 = 1 MiB
	BatchSize       int           // messages per batch (one key lookup and one file per type and hour each); 0 = by source
	IdleTimeout     time.Duration // Pub/Sub: stop after this long without messages; 0 = never
	MaxMessages     int64         // Pub/Sub: stop after about this many; 0 = no limit
	AllowedLateness time.Duration // hours close at end + this
	KeyRetryBudget  time.Duration // 0 = transforms.DefaultKeyRetryBudget
	KeyCacheSize    int           // users' keys and built ciphers a worker keeps; 0 = transforms.DefaultKeyCacheSize

	RunID string // prefix of every file name this run writes; "" = random

	// Progress, when set, gets a line every ProgressEvery (default 10s):
	// events/s, written, dead-lettered, late, acked, hours closed.
	Progress      io.Writer
	ProgressEvery time.Duration
}

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
// returns ErrDryRun.
func run(ctx context.Context, p *beam.Pipeline) (beam.PipelineResult, error) {
	res, err := beamx.RunWithMetrics(ctx, p)
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
	if c.IdleTimeout < 0 || c.AllowedLateness < 0 || c.KeyRetryBudget < 0 || c.MaxMessages < 0 || c.KeyCacheSize < 0 {
		return bad("durations and counts must not be negative")
	}
	if c.Subscription == "" && (c.IdleTimeout > 0 || c.MaxMessages > 0) {
		return bad("idle timeout and max messages apply to a subscription only")
	}
	if c.RunID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.RunID = time.Now().UTC().Format("20060102T150405") + "_" + hex.EncodeToString(b[:])
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
	buildIngest(s, cfg)
	return nil
}

func buildIngest(s beam.Scope, cfg IngestConfig) {
	var batches beam.PCollection
	if cfg.Subscription != "" {
		batches = transforms.ReadPubSub(s, transforms.PubSubConfig{
			Subscription: cfg.Subscription, BatchSize: cfg.BatchSize,
			IdleTimeout: cfg.IdleTimeout, MaxMessages: cfg.MaxMessages, RunID: cfg.RunID,
		})
	} else {
		batches = transforms.ReadReplay(s, transforms.ReplayConfig{
			Files: cfg.Inputs, BatchSize: cfg.BatchSize, RunID: cfg.RunID, Fallback: time.Now().UTC(),
		})
	}
	if cfg.Subscription != "" {
		// Pulled batches (not events) are redistributed, so that the
		// anonymize+write stage runs in parallel bundles on every core.
		// (Replay files are split into byte ranges before they are read.)
		batches = beam.Reshuffle(s, batches)
	}
	notices := transforms.AnonymizeAndWrite(s, batches, transforms.WriteConfig{
		Root: cfg.Out, KeysURL: cfg.KeysURL, KeyScope: cfg.KeyScope, MaxPayload: cfg.MaxPayload,
		AllowedLateness: cfg.AllowedLateness, KeyRetryBudget: cfg.KeyRetryBudget, KeyCacheSize: cfg.KeyCacheSize,
	})
	transforms.CompleteHours(s, notices, transforms.CompleteConfig{
		Root: cfg.Out, AllowedLateness: cfg.AllowedLateness, RunID: cfg.RunID,
	})
}

// Ingest builds the ingest pipeline and runs it with the runner of the
// --runner flag (prism by default), then returns its accounting.
func Ingest(ctx context.Context, cfg IngestConfig) (*IngestResult, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	p, s := beam.NewPipelineWithRoot()
	buildIngest(s, cfg)

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
		return nil, fmt.Errorf("pipelines: ingest run %s: %w", cfg.RunID, err)
	}
	out := &IngestResult{RunID: cfg.RunID, Elapsed: time.Since(start)}
	if res != nil {
		out.Rows = accountingFromMetrics(res.Metrics())
		out.Keys = keyActivityFromMetrics(res.Metrics())
	}
	return out, nil
}

// IngestResult is the accounting of one ingest run.
type IngestResult struct {
	RunID   string
	Elapsed time.Duration
	Rows    []AccountRow // by type, version, hour
	Keys    KeyActivity
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
	var k KeyActivity
	for _, c := range m.AllMetrics().Counters() {
		if c.Namespace() != transforms.MetricsNamespace {
			continue
		}
		switch c.Name() {
		case transforms.CountKeyLookups:
			k.Lookups += c.Result()
		case transforms.CountKeyCacheHits:
			k.CacheHits += c.Result()
		case transforms.CountKeyCalls:
			k.Calls += c.Result()
		case transforms.CountCipherHits:
			k.CipherHits += c.Result()
		case transforms.CountCiphersBuilt:
			k.CiphersBuilt += c.Result()
		}
	}
	return k
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

func accountingFromMetrics(m metrics.Results) []AccountRow {
	rows := map[transforms.HourKey3]*AccountRow{}
	for _, c := range m.AllMetrics().Counters() {
		if c.Namespace() != transforms.MetricsNamespace {
			continue
		}
		p := strings.Split(c.Name(), "|")
		if len(p) != 4 {
			continue
		}
		v, _ := strconv.Atoi(p[2])
		h, err := layout.ParseHour(p[3])
		if err != nil {
			continue
		}
		k := transforms.HourKey3{Type: p[1], Version: v, HourMillis: h.UnixMilli()}
		r := rows[k]
		if r == nil {
			r = &AccountRow{Type: p[1], Version: v, Hour: h, Dead: map[string]int64{}}
			rows[k] = r
		}
		n := c.Result()
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
		row(typ, v, layout.FormatHour(a.Hour), a)
	}
	row("TOTAL", "", "", r.Totals())
	t := r.Totals()
	if secs := r.Elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(w, "run %s: %d messages in %s (%.0f/s)\n", r.RunID, t.In, r.Elapsed.Round(time.Millisecond), float64(t.In)/secs)
	}
	if r.Keys.Lookups > 0 {
		fmt.Fprintln(w, r.Keys)
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
