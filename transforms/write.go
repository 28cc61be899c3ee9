package transforms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/retry"
	"github.com/lockstream/lockstream/rootid"
	"github.com/lockstream/lockstream/schemas"
)

func init() {
	register.DoFn3x1[context.Context, Batch, func(string), error](&writeFn{})
	register.Emitter1[string]()
}

// Metric namespace of the counters of the write stage. Counter names are
// "<kind>|<type>|<version>" (CounterName) with kind one of in, written,
// late, dead:<reason>; type "" and version 0 for messages whose type is
// unknown. They carry no hour, so a job has a bounded set of them (types ×
// versions × kinds): on Dataflow every counter name is a monitoring
// series (the job page, Cloud Monitoring's user counters), for as long as
// the job runs.
const MetricsNamespace = "lockstream.ingest"

// MetricsNamespaceHours holds the same counts per hour, named
// "<kind>|<type>|<version>|<hour>" (HourCounterName), only when
// WriteConfig.HourCounters is set: the end-of-run accounting table of a
// run whose metrics end with it (pipelines.Ingest sets it on every runner
// but Dataflow).
const MetricsNamespaceHours = "lockstream.ingest.hours"

// Counter kinds.
const (
	CountIn      = "in"
	CountWritten = "written"
	CountLate    = "late"
	CountDead    = "dead:" // + reason
)

// CounterName builds a counter name of the write stage (namespace
// MetricsNamespace): "<kind>|<type>|<version>".
func CounterName(kind, eventType string, version int) string {
	return kind + "|" + eventType + "|" + strconv.Itoa(version)
}

// HourCounterName builds a per-hour counter name of the write stage
// (namespace MetricsNamespaceHours): "<kind>|<type>|<version>|<hour>".
func HourCounterName(kind, eventType string, version int, hour time.Time) string {
	return CounterName(kind, eventType, version) + "|" + layout.FormatHour(hour)
}

// counterNamespace is the namespace of a name of writeResult.counts: per
// hour names have four fields (event types and reasons hold no "|").
func counterNamespace(name string) string {
	if strings.Count(name, "|") == 3 {
		return MetricsNamespaceHours
	}
	return MetricsNamespace
}

// WriteConfig configures the write stage (AnonymizeAndWrite, and the
// writers inside the Pub/Sub streams).
type WriteConfig struct {
	Root       string // output root (blob.Open)
	KeysURL    string // see OpenKeys
	KeyScope   string // key-derivation scope; "" = DefaultKeyScope
	MaxPayload int    // bytes; 0 = record.DefaultMaxPayload
	// RunID is the run's id: before a writer's first raw file of an hour it
	// records the hour under writers/<run>/hours/ (package completion).
	RunID string
	// KeyRetryBudget is how long key-service errors of one batch are retried
	// (jittered exponential backoff) before a replay run fails with the
	// cause (nothing of the batch written; a re-run completes it); a Pub/Sub
	// batch is held (its messages stay leased) and retried until the service
	// is back. 0 = DefaultKeyRetryBudget.
	KeyRetryBudget time.Duration
	// KeyCacheSize is how many users' keys, and how many built ciphers, a
	// worker keeps in memory (see DefaultKeyCacheSize, the default for 0).
	// Writers of one process with the same keys URL, scope and size share
	// one key source and cache (env).
	KeyCacheSize int
	// HourCounters also counts per hour (MetricsNamespaceHours), for the
	// accounting table of a run whose metrics end with it. Leave it off on
	// Dataflow: counter names there are monitoring series, and the hour
	// would make their number grow without bound.
	HourCounters bool
}

// DefaultKeyRetryBudget is the default KeyRetryBudget.
const DefaultKeyRetryBudget = 30 * time.Second

func (c *WriteConfig) validate() error {
	if c.Root == "" {
		return errors.New("transforms: write: Root is empty")
	}
	if err := ValidateKeysURL(c.KeysURL); err != nil {
		return fmt.Errorf("transforms: write: %w", err)
	}
	if c.MaxPayload < 0 {
		return fmt.Errorf("transforms: write: MaxPayload %d < 0", c.MaxPayload)
	}
	if c.KeyRetryBudget < 0 {
		return fmt.Errorf("transforms: write: KeyRetryBudget %s < 0", c.KeyRetryBudget)
	}
	if c.KeyCacheSize < 0 {
		return fmt.Errorf("transforms: write: KeyCacheSize %d < 0", c.KeyCacheSize)
	}
	if err := validRunID(c.RunID); err != nil {
		return fmt.Errorf("transforms: write: %w", err)
	}
	if c.KeyRetryBudget == 0 {
		c.KeyRetryBudget = DefaultKeyRetryBudget
	}
	return nil
}

// AnonymizeAndWrite anonymizes each batch of the replay source (one key
// lookup), writes its raw, late and dead-letter files, and returns the
// names of the raw and late files written (for transforms.EndBranch).
func AnonymizeAndWrite(s beam.Scope, batches beam.PCollection, cfg WriteConfig) (beam.PCollection, error) {
	if err := cfg.validate(); err != nil {
		return beam.PCollection{}, err
	}
	s = s.Scope("transforms.AnonymizeAndWrite")
	return beam.ParDo(s, &writeFn{Config: toFnConfig(cfg)}, batches), nil
}

// writeFnConfig is WriteConfig as DoFns carry it (durations in ms).
type writeFnConfig struct {
	Root             string
	KeysURL          string
	KeyScope         string
	MaxPayload       int
	RunID            string
	KeyRetryBudgetMs int64
	KeyCacheSize     int
	HourCounters     bool
}

func toFnConfig(c WriteConfig) writeFnConfig {
	return writeFnConfig{Root: c.Root, KeysURL: c.KeysURL, KeyScope: c.KeyScope, MaxPayload: c.MaxPayload, RunID: c.RunID,
		KeyRetryBudgetMs: c.KeyRetryBudget.Milliseconds(), KeyCacheSize: c.KeyCacheSize, HourCounters: c.HourCounters}
}

// HourKey is the key of notices: "<type>|<version>|<hour>".
func HourKey(eventType string, version int, hour time.Time) string {
	return eventType + "|" + strconv.Itoa(version) + "|" + layout.FormatHour(hour)
}

type writeFn struct {
	Config writeFnConfig

	w *batchWriter
	// pending gets the outcome of the bundle's last batch's write, under
	// way while the next one is anonymized (nil: none).
	pending chan writeDone
}

// writeDone is the outcome of a batch's write (writeOutcomes).
type writeDone struct {
	res writeResult
	err error
}

func (fn *writeFn) Setup(ctx context.Context) error {
	var err error
	fn.w, err = newBatchWriter(ctx, fn.Config)
	return err
}

// StartBundle waits out and drops a write a failed bundle left pending:
// its names and counts belong to that bundle, whose output and metrics
// the runner discards (the files, written or not, are found by name when
// its batches are retried).
func (fn *writeFn) StartBundle(context.Context, func(string)) {
	if fn.pending != nil {
		<-fn.pending
		fn.pending = nil
	}
}

// ProcessElement anonymizes b while the previous batch's files are
// being written, then waits for them (and emits their names) and starts
// writing b's on a goroutine of its own: a bundle writes one batch's files
// at a time, in order, and FinishBundle waits for the last. Writing a
// batch's files is one goroutine's work, most of it system calls
// (creating, syncing and linking a file per type, hour and dead-letter
// reason); the next batch's anonymization keeps the other core busy
// meanwhile. A failed write fails the bundle at the next batch or at
// FinishBundle, with its cause.
func (fn *writeFn) ProcessElement(ctx context.Context, b Batch, emit func(string)) error {
	outs, err := fn.w.anonymize(ctx, b.Records(), false)
	if perr := fn.finishPending(ctx, emit); perr != nil {
		return perr
	}
	if err != nil {
		return err
	}
	done := make(chan writeDone, 1)
	fn.pending = done
	// The write needs the batch's name, time and bad lines, not its
	// messages (outs holds what is written): they can be collected.
	rest := Batch{ID: b.ID, Bad: b.Bad, TimeMillis: b.TimeMillis}
	go func() {
		res, err := fn.w.writeOutcomes(ctx, &rest, outs, false)
		done <- writeDone{res, err}
	}()
	return nil
}

// FinishBundle waits for the bundle's last batch to be written: the
// bundle commits only with every batch's files durable.
func (fn *writeFn) FinishBundle(ctx context.Context, emit func(string)) error {
	return fn.finishPending(ctx, emit)
}

// finishPending waits for the pending write, if any, reports its counts
// and emits the names of its files.
func (fn *writeFn) finishPending(ctx context.Context, emit func(string)) error {
	if fn.pending == nil {
		return nil
	}
	d := <-fn.pending
	fn.pending = nil
	if d.err != nil {
		return d.err
	}
	fn.w.report(ctx, d.res.counts)
	for _, f := range d.res.files {
		emit(f)
	}
	return nil
}

// batchWriter is the write stage: it anonymizes a batch and writes its
// raw, late and dead-letter files. It is safe for concurrent use (the
// Pub/Sub streams write several batches at once).
type batchWriter struct {
	cfg    writeFnConfig
	bucket blob.Bucket
	reg    *schemas.Registry
	keys   *keyEnv
	runs   *runCounter             // the run's counters in this process (nil without a run id)
	anons  chan *record.Anonymizer // idle anonymizers (one goroutine each at a time)
	// cores has a slot per core, held by a slice while it anonymizes and
	// let go while its key lookup waits (yieldingKeys).
	cores  chan struct{}
	closed *closedCache
	marks  completion.HourMarks
	rootID string
}

func newBatchWriter(ctx context.Context, cfg writeFnConfig) (*batchWriter, error) {
	w := &batchWriter{cfg: cfg, closed: &closedCache{hour: map[HourKey3]time.Time{}}}
	var err error
	if w.bucket, err = blob.Open(ctx, cfg.Root); err != nil {
		return nil, err
	}
	if w.reg, err = schemas.Embedded(); err != nil {
		return nil, err
	}
	if w.keys, err = keyEnvFor(ctx, cfg.KeysURL, cfg.KeyScope, cfg.KeyCacheSize); err != nil {
		return nil, err
	}
	w.runs = env.runCounter(cfg.Root, cfg.RunID)
	w.anons = make(chan *record.Anonymizer, 4*runtime.GOMAXPROCS(0))
	w.cores = make(chan struct{}, runtime.GOMAXPROCS(0))
	// Dead letters of users no one can tell are sealed under a key of this
	// root and day, which retention shreds with them.
	if w.rootID, err = rootid.Get(ctx, w.bucket); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *batchWriter) anonymizer() (*record.Anonymizer, error) {
	select {
	case a := <-w.anons:
		return a, nil
	default:
		return record.NewAnonymizer(w.reg, yielding(w.keys.keys, w.cores), record.Options{MaxPayload: w.cfg.MaxPayload, Ciphers: w.keys.ciphers, DeadLetterScope: w.rootID})
	}
}

func (w *batchWriter) putAnonymizer(a *record.Anonymizer) {
	select {
	case w.anons <- a:
	default:
	}
}

// group is the output of one batch for one (type, version, hour).
type group struct {
	typ     string
	version int
	hour    time.Time
	recs    [][]byte
	late    bool
	dead    map[string]int64
}

type deadKey struct {
	reason string
	hour   time.Time
}

// writeResult is what writing one batch did.
type writeResult struct {
	files   []string // raw and late files written
	notices []Notice // per (type, version, hour) of the batch
	written int64    // records written to raw
	late    int64    // records written to late/
	dead    int64    // messages dead-lettered
	// counts are the batch's accounting counters (MetricsNamespace), by
	// name: report them from the DoFn's own goroutine (Beam's counters of
	// a bundle are not safe for concurrent use).
	counts map[string]int64
}

// report adds counts to the bundle's counters, with what the worker's key
// caches did since they were last reported. Call it from the goroutine
// that runs the DoFn's ProcessElement.
func (w *batchWriter) report(ctx context.Context, counts map[string]int64) {
	for name, n := range counts {
		beam.NewCounter(counterNamespace(name), name).Inc(ctx, n)
	}
	w.runs.add(counts)
	reportKeyActivity(ctx, w.runs, w.keys)
}

// write anonymizes a batch and writes its files; when it returns nil they
// are durable. redeliverable: the source can deliver the batch again
// (Pub/Sub), so a key-service outage holds it instead of dead-lettering it
// (write then retries until ctx ends), and files of the batch's name must
// not exist yet (batch ids of such sources are unique).
func (w *batchWriter) write(ctx context.Context, b *Batch, redeliverable bool) (writeResult, error) {
	outs, err := w.anonymize(ctx, b.Records(), redeliverable)
	if err != nil {
		return writeResult{}, err
	}
	return w.writeOutcomes(ctx, b, outs, redeliverable)
}

// writeOutcomes writes the files of batch b, whose messages were
// anonymized into outs, and accounts for them.
func (w *batchWriter) writeOutcomes(ctx context.Context, b *Batch, outs []record.Outcome, redeliverable bool) (writeResult, error) {
	var res writeResult
	groups := map[HourKey3]*group{}
	var order []HourKey3
	dead := map[deadKey][]*record.Rejection{}
	getGroup := func(typ string, v int, hour time.Time) (*group, error) {
		k := HourKey3{typ, v, hour.UnixMilli()}
		g := groups[k]
		if g == nil {
			late, err := w.closed.isClosed(ctx, w.bucket, typ, v, hour)
			if err != nil {
				return nil, err
			}
			g = &group{typ: typ, version: v, hour: hour, late: late}
			groups[k] = g
			order = append(order, k)
		}
		return g, nil
	}
	for i := range outs {
		o := &outs[i]
		if o.Reject != nil {
			dk := deadKey{o.Reject.Reason, o.Hour}
			dead[dk] = append(dead[dk], o.Reject)
			if o.EventType != "" && o.Version > 0 {
				g, err := getGroup(o.EventType, o.Version, o.Hour)
				if err != nil {
					return res, err
				}
				if g.dead == nil {
					g.dead = map[string]int64{}
				}
				g.dead[o.Reject.Reason]++
			}
			continue
		}
		g, err := getGroup(o.EventType, o.Version, o.Hour)
		if err != nil {
			return res, err
		}
		g.recs = append(g.recs, o.Record)
	}
	badHour := record.Hour(b.Time())
	for _, bl := range b.Bad {
		dk := deadKey{record.ReasonBadMessage, badHour}
		dead[dk] = append(dead[dk], &record.Rejection{
			Reason: record.ReasonBadMessage, Path: badLinePath(bl), Rule: bl.Cause,
			PublishTime: badHour,
		})
	}

	// Write every file of the batch.
	for _, k := range order {
		g := groups[k]
		if len(g.recs) == 0 {
			continue
		}
		s, err := w.reg.Lookup(g.typ, g.version)
		if err != nil {
			return res, fmt.Errorf("transforms: %s v%d: %w", g.typ, g.version, err)
		}
		name := RawPartName(g.typ, g.version, g.hour, b.ID)
		if g.late {
			name = LatePartName(g.typ, g.version, g.hour, b.ID)
		} else if err := w.marks.Mark(ctx, w.bucket, w.cfg.RunID, layout.Hour{Type: g.typ, Version: g.version, Hour: g.hour}); err != nil {
			return res, err
		}
		if err := writeOCF(ctx, w.bucket, name, s.Encrypted().JSON, g.recs, !redeliverable); err != nil {
			return res, err
		}
		res.files = append(res.files, name)
	}
	deadKeys := make([]deadKey, 0, len(dead))
	for k := range dead {
		deadKeys = append(deadKeys, k)
	}
	sort.Slice(deadKeys, func(i, j int) bool {
		if deadKeys[i].reason != deadKeys[j].reason {
			return deadKeys[i].reason < deadKeys[j].reason
		}
		return deadKeys[i].hour.Before(deadKeys[j].hour)
	})
	for _, k := range deadKeys {
		if err := writeDeadLetters(ctx, w.bucket, DeadLetterName(k.reason, k.hour, b.ID), dead[k], !redeliverable); err != nil {
			return res, err
		}
	}

	// Account. Counts are keyed by value; each counter's name is formatted
	// once per batch, not once per message.
	type counterKey struct {
		kind, reason string // reason: of CountDead
		hk           HourKey3
	}
	in := map[counterKey]int64{}
	for i := range outs {
		o := &outs[i]
		hk := HourKey3{o.EventType, o.Version, o.Hour.UnixMilli()}
		in[counterKey{CountIn, "", hk}]++
		switch {
		case o.Reject != nil:
			in[counterKey{CountDead, o.Reject.Reason, hk}]++
		case groups[hk].late:
			in[counterKey{CountLate, "", hk}]++
		default:
			in[counterKey{CountWritten, "", hk}]++
		}
	}
	if n := int64(len(b.Bad)); n > 0 {
		hk := HourKey3{"", 0, badHour.UnixMilli()}
		in[counterKey{CountIn, "", hk}] += n
		in[counterKey{CountDead, record.ReasonBadMessage, hk}] += n
	}
	res.counts = make(map[string]int64, len(in))
	for k, n := range in {
		res.counts[CounterName(k.kind+k.reason, k.hk.Type, k.hk.Version)] += n
		if w.cfg.HourCounters {
			res.counts[HourCounterName(k.kind+k.reason, k.hk.Type, k.hk.Version, time.UnixMilli(k.hk.HourMillis).UTC())] += n
		}
	}
	env.progress.messages.Add(int64(len(outs) + len(b.Bad)))
	for _, k := range order {
		g := groups[k]
		if g.late {
			res.late += int64(len(g.recs))
		} else {
			res.written += int64(len(g.recs))
		}
		n := Notice{Type: g.typ, Version: g.version, HourMillis: g.hour.UnixMilli(), Records: int64(len(g.recs)), Dead: g.dead, Late: g.late}
		if len(g.recs) > 0 {
			n.File = RawPartName(g.typ, g.version, g.hour, b.ID)
			if g.late {
				n.File = LatePartName(g.typ, g.version, g.hour, b.ID)
			}
		}
		res.notices = append(res.notices, n)
	}
	for _, rs := range dead {
		res.dead += int64(len(rs))
	}
	env.progress.written.Add(res.written)
	env.progress.late.Add(res.late)
	env.progress.dead.Add(res.dead)
	return res, nil
}

// HourKey3 identifies an (event type, version, hour) in maps.
type HourKey3 struct {
	Type       string
	Version    int
	HourMillis int64
}

// badLinePath locates a bad replay line: "file:line", or "file@byte" in a
// later byte range of a large file.
func badLinePath(bl BadLine) string {
	if bl.Line > 0 {
		return bl.File + ":" + strconv.FormatInt(bl.Line, 10)
	}
	return bl.File + "@" + strconv.FormatInt(bl.Offset, 10)
}

// anonymize retries key-service errors with jittered exponential backoff.
// A batch the source can redeliver (Pub/Sub) is held: it is retried until
// the service answers or ctx ends, its messages stay leased and its
// publish times hold the stream's watermark, so an outage sends nothing
// late and loses nothing. Any other batch (replay files) is retried for
// the budget, then fails the bundle with the cause, so the run fails:
// nothing of the batch is written or dead-lettered (a message is never
// dead-lettered for the key service's unavailability). Re-run the replay
// once the service is back: batches already written are found by name,
// hourly drops what was written twice.
func (w *batchWriter) anonymize(ctx context.Context, msgs []record.Message, redeliverable bool) ([]record.Outcome, error) {
	budget := time.Duration(w.cfg.KeyRetryBudgetMs) * time.Millisecond
	start := time.Now()
	deadline := start.Add(budget)
	backoff := retry.Backoff{First: 50 * time.Millisecond, Max: 5 * time.Second}
	held := false
	defer func() {
		if held {
			env.progress.held.Add(-int64(len(msgs)))
		}
	}()
	for attempt := 1; ; attempt++ {
		outs, err := w.anonymizeSlices(ctx, msgs)
		if err == nil {
			if held {
				log.Infof(ctx, "lockstream: key service back after %s; writing %d held messages", time.Since(start).Round(time.Second), len(msgs))
			}
			return outs, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !keyclient.IsTransient(err) {
			// Wrong secret, missing rights, unknown category: retrying cannot
			// help and dead-lettering every message would bury the cause.
			// Fail the bundle: nothing is written or acked, the run stops
			// with this error, and the input can be replayed once fixed.
			return nil, fmt.Errorf("lockstream: the key service refused a batch of %d messages (not retried): %w", len(msgs), err)
		}
		sleep := backoff.Delay(attempt)
		if time.Now().Add(sleep).After(deadline) {
			if !redeliverable {
				// The error text names no user (record's errors carry counts only).
				return nil, fmt.Errorf("lockstream: the key service did not answer for a batch of %d messages within the key retry budget (%s, %d attempts); nothing of it was written: re-run once it answers: %w",
					len(msgs), budget, attempt, err)
			}
			if !held {
				held = true
				env.progress.held.Add(int64(len(msgs)))
			}
			log.Warnf(ctx, "lockstream: key service unavailable for %s; holding a batch of %d messages (leased, not written, not late) and retrying: %v",
				time.Since(start).Round(time.Second), len(msgs), err)
			deadline = time.Now().Add(budget)
		}
		if err := retry.Sleep(ctx, sleep); err != nil {
			return nil, err
		}
	}
}

// sliceSize is how many messages an anonymizer takes at a time (one key
// lookup each): a batch is cut into slices of at least this many (one
// slice when it is smaller).
const sliceSize = 500

// anonymizeSlices anonymizes msgs in slices of about sliceSize messages,
// as many at once as there are cores: prism may hand one bundle many
// batches while the other core idles, and Anonymize is most of a batch's
// CPU. Each slice makes its own (batched, cached) key lookup. Slices of a
// few hundred messages rather than one per core: the keys a slice's
// lookup copies out are still in the CPU's cache when its events are
// sealed, a slow slice holds a core for less time at the end of a batch,
// and an anonymizer's buffers are the size of a slice (a replay batch of
// 5000 in 2 slices against 10: ingest 5.5-5.7 s for 7.6 s of user CPU
// and a peak RSS of 286-294 MB, against 5.0-5.2 s, 7.0 s, 269-270 MB).
//
// Every slice of the batch starts at once, but one runs only while it
// holds a slot of w.cores; against a key service across a network it lets
// go of its slot while its key lookup waits (yielding): the lookups of a
// batch's slices go out together and the slices whose keys have come seal
// meanwhile. (Run as many at once as there are cores, slices waited for
// the network one after another: against a key service 2 ms away, ingest
// of 1M events took 7.3-7.4 s, against 5.0-5.3 s in process.)
func (w *batchWriter) anonymizeSlices(ctx context.Context, msgs []record.Message) ([]record.Outcome, error) {
	run := func(ctx context.Context, msgs []record.Message) ([]record.Outcome, error) {
		select {
		case w.cores <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-w.cores }()
		a, err := w.anonymizer()
		if err != nil {
			return nil, err
		}
		defer w.putAnonymizer(a)
		return a.Anonymize(ctx, msgs)
	}
	n := len(msgs) / sliceSize
	if n <= 1 {
		return run(ctx, msgs)
	}
	outs := make([]record.Outcome, 0, len(msgs))
	parts := make([][]record.Outcome, n)
	g, gctx := errgroup.WithContext(ctx)
	for i := range n {
		lo, hi := i*len(msgs)/n, (i+1)*len(msgs)/n
		g.Go(func() (err error) {
			parts[i], err = run(gctx, msgs[lo:hi])
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, p := range parts {
		outs = append(outs, p...)
	}
	return outs, nil
}

// yieldingKeys is a key source whose lookups let go of their caller's slot
// of cores (batchWriter.cores) while they wait, and take one back before
// they return: a slice waiting for the key service leaves its core to a
// slice that can seal. A lookup answered from the key client's cache gives
// its slot up for as long as two channel operations.
type yieldingKeys struct {
	keys  record.Keys
	cores chan struct{}
}

// yieldingSets is a yieldingKeys over a source that answers sets of users
// in one lookup (keyclient.Client.ForEncryptSets), which record.Anonymizer
// uses when its key source has it.
type yieldingSets struct {
	yieldingKeys
	sets interface {
		ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error)
	}
}

// yielding wraps keys for anonymizers whose slices hold a slot of cores,
// when its lookups wait on a network (keyclient.Client.Networked). An
// in-process key service's lookups are CPU work of this process: a slice
// letting go of its core for one would only crowd the cores (ingest of 1M
// events against the in-process fake: 5.4-5.6 s for 7.5-7.7 s of user CPU
// with the slots let go, 5.0-5.3 s for 6.8-7.1 s without).
func yielding(keys record.Keys, cores chan struct{}) record.Keys {
	if !networked(keys) {
		return keys
	}
	y := yieldingKeys{keys: keys, cores: cores}
	if s, ok := keys.(interface {
		ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error)
	}); ok {
		return yieldingSets{yieldingKeys: y, sets: s}
	}
	return y
}

// networked reports whether keys's lookups wait on a network
// (keyclient.Client.Networked).
func networked(keys any) bool {
	n, ok := keys.(interface{ Networked() bool })
	return ok && n.Networked()
}

// yieldingDecryptKeys is yieldingKeys for a view's lanes.
type yieldingDecryptKeys struct {
	keys  record.DecryptKeys
	cores chan struct{}
}

// yieldingDecryptInto is a yieldingDecryptKeys over a source that answers
// into room its caller reuses (keyclient.Client.ForDecryptInto), which
// record.Decryptor uses when its key source has it.
type yieldingDecryptInto struct {
	yieldingDecryptKeys
	into interface {
		ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error)
	}
}

// yieldingDecrypt wraps keys for decryptors whose lanes hold a slot of
// cores, when its lookups wait on a network.
func yieldingDecrypt(keys record.DecryptKeys, cores chan struct{}) record.DecryptKeys {
	if !networked(keys) {
		return keys
	}
	y := yieldingDecryptKeys{keys: keys, cores: cores}
	if in, ok := keys.(interface {
		ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error)
	}); ok {
		return yieldingDecryptInto{yieldingDecryptKeys: y, into: in}
	}
	return y
}

func (y yieldingDecryptKeys) ForDecrypt(ctx context.Context, subjects, categories []string) ([]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.keys.ForDecrypt(ctx, subjects, categories)
}

func (y yieldingDecryptInto) ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.into.ForDecryptInto(ctx, a, subjects, categories)
}

func (y yieldingKeys) ForEncrypt(ctx context.Context, userIDs, categories []string) ([]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.keys.ForEncrypt(ctx, userIDs, categories)
}

func (y yieldingSets) ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.sets.ForEncryptSets(ctx, sets)
}

// FileCodec is the block codec of the raw and dataset files lockstream
// writes (see record.CodecSnappy for the measurement behind it).
const FileCodec = record.CodecSnappy

// writeOCF writes one OCF file of pre-encoded records. With existingOK, a
// file of that name that exists already was written by an earlier attempt
// of the same batch (replay batch ids are a pure function of the input
// range; Create is atomic), so it counts as written. Without it (Pub/Sub
// batch ids are unique per pull), an existing file is an error: the batch
// must not be acknowledged as written.
func writeOCF(ctx context.Context, b blob.Bucket, name string, schemaJSON []byte, recs [][]byte, existingOK bool) error {
	w, err := b.Create(ctx, name)
	if errors.Is(err, blob.ErrExist) && existingOK {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transforms: create %s: %w", name, err)
	}
	ocf, err := record.NewOCFWriter(w, schemaJSON, record.SyncMarker(name), FileCodec)
	if err != nil {
		w.Abort()
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	for _, r := range recs {
		if err := ocf.Append(r); err != nil {
			w.Abort()
			return fmt.Errorf("transforms: %s: %w", name, err)
		}
	}
	if err := ocf.Close(); err != nil {
		w.Abort()
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	if err := w.Close(); err != nil && !(existingOK && errors.Is(err, blob.ErrExist)) {
		return fmt.Errorf("transforms: close %s: %w", name, err)
	}
	return nil
}

// writeDeadLetters writes rejections as NDJSON (record.Rejection holds no
// plaintext: payloads are sealed).
func writeDeadLetters(ctx context.Context, b blob.Bucket, name string, rs []*record.Rejection, existingOK bool) error {
	var buf []byte
	for _, r := range rs {
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("transforms: %s: %w", name, err)
		}
		buf = append(append(buf, line...), '\n')
	}
	err := blob.WriteAll(ctx, b, name, buf)
	if err != nil && !(existingOK && errors.Is(err, blob.ErrExist)) {
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	return nil
}

// closedCache remembers which hours have a _COMPLETE marker: a closed hour
// stays closed; an open one is re-checked after openRecheck. A batch that
// writes to raw/ just after its hour completed (the cache was stale) is not
// lost: the hour's next supplement publishes every part file no manifest
// lists.
type closedCache struct {
	mu   sync.Mutex
	hour map[HourKey3]time.Time // zero time: closed; else: open as of then
}

const openRecheck = 10 * time.Second

func (c *closedCache) isClosed(ctx context.Context, b blob.Bucket, typ string, v int, hour time.Time) (bool, error) {
	k := HourKey3{typ, v, hour.UnixMilli()}
	c.mu.Lock()
	t, ok := c.hour[k]
	c.mu.Unlock()
	if ok && (t.IsZero() || time.Since(t) < openRecheck) {
		return t.IsZero(), nil
	}
	closed, err := b.Exists(ctx, layout.CompleteName(typ, v, hour))
	if err != nil {
		return false, fmt.Errorf("transforms: %w", err)
	}
	c.mu.Lock()
	if closed {
		c.hour[k] = time.Time{}
	} else {
		c.hour[k] = time.Now()
	}
	c.mu.Unlock()
	return closed, nil
}
