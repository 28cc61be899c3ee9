package transforms

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/lockstream/lockstream/layout"
)

// The write stage, AnonymizeAndWrite: its configuration and its DoFn.
// The DoFn's work is a batchWriter's (write_batch.go): anonymize a batch
// (write_anonymize.go), write its files (write_files.go) and count them
// (write_counters.go).

func init() {
	register.DoFn3x1[context.Context, Batch, func(string), error](&writeFn{})
	register.Emitter1[string]()
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
