package transforms

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/sdf"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/rtrackers/offsetrange"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/layout"
)

func init() {
	register.DoFn5x2[context.Context, *pullEstimator, *sdf.LockRTracker, []byte, func(string), sdf.ProcessContinuation, error](&pullFn{})
	beam.RegisterType(reflect.TypeOf(PullState{}))
}

// Defaults of PubSubConfig.
const (
	// DefaultPullStreams: a job pulls with this many streams (restrictions
	// of the source), which the runner spreads over its workers; on prism
	// as many run at once as the machine has cores.
	DefaultPullStreams = 4
	// DefaultMaxOutstandingMessages and DefaultMaxOutstandingBytes bound
	// what a worker holds pulled and not yet acknowledged (over all its
	// streams): pulling pauses at either limit.
	DefaultMaxOutstandingMessages = 10_000
	DefaultMaxOutstandingBytes    = 64 << 20
	// DefaultMaxDeliveryDelay is how long after its publish time Pub/Sub is
	// assumed to deliver a message while the subscription is being read.
	DefaultMaxDeliveryDelay = time.Minute
)

// PubSubConfig configures IngestPubSub.
type PubSubConfig struct {
	// Subscription is "projects/P/subscriptions/S".
	Subscription string
	// EmulatorHost is the host:port of a Pub/Sub emulator (plaintext, no
	// credentials); "" means $PUBSUB_EMULATOR_HOST, and Google Cloud when
	// that is unset too.
	EmulatorHost string
	BatchSize    int // messages per Pull (and batch), 1..1000
	Streams      int // parallel pull streams; 0 = DefaultPullStreams
	// MaxOutstandingMessages and MaxOutstandingBytes bound, per worker, the
	// messages pulled and not yet acknowledged; 0 = the defaults.
	MaxOutstandingMessages int
	MaxOutstandingBytes    int64
	// MaxDeliveryDelay bounds the watermark: a stream that found the
	// subscription empty at time t vouches that every message published
	// before t-MaxDeliveryDelay was delivered (to it or to another live
	// writer). 0 = DefaultMaxDeliveryDelay.
	MaxDeliveryDelay time.Duration
	// Lateness is added to an hour's end before a stream counts as past it
	// (recorded in its writer record; see package completion).
	Lateness time.Duration
	// IdleTimeout > 0 drains the source when no message arrived for that
	// long: each stream records that it ended, and the hours it wrote may
	// complete. 0 reads until stopped.
	IdleTimeout time.Duration
	// StopAfter > 0 is a planned stop after that long (the job's clock): in
	// flight batches are written and acknowledged, each stream records
	// where it stopped, later hours stay open for the next job. A planned
	// stop is also asked for by creating layout.WriterStop(run id) (what
	// lockstream ingest does on SIGTERM).
	StopAfter time.Duration
	// MaxMessages > 0 stops (planned) after about that many messages.
	MaxMessages int64
	// StaleAfter: see completion.Record (0 = completion.DefaultStaleAfter).
	StaleAfter time.Duration
	// Clock is the time of publish times, watermarks, heartbeats and
	// leases (tests give it a clock.Starting; zero = the system clock).
	Clock clock.Clock
	// Write configures the writers inside the streams (Write.RunID is the
	// run id).
	Write WriteConfig
	// ExitBeforeComplete (tests) kills the process with SIGKILL when it is
	// about to write its first _COMPLETE marker: a crash after an hour's
	// last ack and before its marker.
	ExitBeforeComplete bool
}

// MaxPullSize is the largest Pub/Sub Pull.
const MaxPullSize = 1000

// MaxPullStreams bounds PubSubConfig.Streams.
const MaxPullStreams = 256

func (c *PubSubConfig) validate() error {
	p := strings.Split(c.Subscription, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "subscriptions" || p[3] == "" {
		return fmt.Errorf("transforms.IngestPubSub: subscription %q is not projects/P/subscriptions/S", c.Subscription)
	}
	if c.BatchSize < 1 || c.BatchSize > MaxPullSize {
		return fmt.Errorf("transforms.IngestPubSub: BatchSize %d not in 1..%d", c.BatchSize, MaxPullSize)
	}
	if c.Streams == 0 {
		c.Streams = DefaultPullStreams
	}
	if c.Streams < 1 || c.Streams > MaxPullStreams {
		return fmt.Errorf("transforms.IngestPubSub: Streams %d not in 1..%d", c.Streams, MaxPullStreams)
	}
	if c.MaxOutstandingMessages == 0 {
		c.MaxOutstandingMessages = DefaultMaxOutstandingMessages
	}
	if c.MaxOutstandingBytes == 0 {
		c.MaxOutstandingBytes = DefaultMaxOutstandingBytes
	}
	if c.MaxOutstandingMessages < c.BatchSize {
		return fmt.Errorf("transforms.IngestPubSub: MaxOutstandingMessages %d is below the batch size %d", c.MaxOutstandingMessages, c.BatchSize)
	}
	if c.MaxOutstandingBytes < 1<<20 {
		return fmt.Errorf("transforms.IngestPubSub: MaxOutstandingBytes %d is below 1 MiB", c.MaxOutstandingBytes)
	}
	if c.MaxDeliveryDelay == 0 {
		c.MaxDeliveryDelay = DefaultMaxDeliveryDelay
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = completion.DefaultStaleAfter
	}
	if c.MaxDeliveryDelay < 0 || c.Lateness < 0 || c.IdleTimeout < 0 || c.StopAfter < 0 || c.MaxMessages < 0 || c.StaleAfter < 0 {
		return errors.New("transforms.IngestPubSub: durations and counts must be >= 0")
	}
	if c.StaleAfter < 4*heartbeatEvery {
		return fmt.Errorf("transforms.IngestPubSub: StaleAfter %s is below 4 heartbeats (%s)", c.StaleAfter, 4*heartbeatEvery)
	}
	return c.Write.validate()
}

// IngestPubSub reads a Pub/Sub subscription with Streams parallel pull
// streams and writes what it reads: each stream pulls batches, anonymizes
// and writes them (raw, late and dead-letter files, as AnonymizeAndWrite),
// and acknowledges each batch once its files are durable. It returns the
// names of the raw and late files written (for EndBranch). See the package
// doc, "Pub/Sub".
func IngestPubSub(s beam.Scope, cfg PubSubConfig) (beam.PCollection, error) {
	if err := cfg.validate(); err != nil {
		return beam.PCollection{}, err
	}
	s = s.Scope("transforms.IngestPubSub")
	imp := beam.Impulse(s)
	return beam.ParDo(s, &pullFn{
		Subscription: cfg.Subscription, EmulatorHost: cfg.EmulatorHost, BatchSize: cfg.BatchSize, Streams: cfg.Streams,
		MaxOutstandingMessages: cfg.MaxOutstandingMessages, MaxOutstandingBytes: cfg.MaxOutstandingBytes,
		MaxDeliveryDelayMs: cfg.MaxDeliveryDelay.Milliseconds(), LatenessMs: cfg.Lateness.Milliseconds(),
		IdleTimeoutMs: cfg.IdleTimeout.Milliseconds(), StopAfterMs: cfg.StopAfter.Milliseconds(), MaxMessages: cfg.MaxMessages,
		StaleAfterMs: cfg.StaleAfter.Milliseconds(), Clock: cfg.Clock, Write: toFnConfig(cfg.Write),
		ExitBeforeComplete: cfg.ExitBeforeComplete,
	}, imp), nil
}

// PullState is the watermark-estimator state of a stream, carried across
// checkpoints.
type PullState struct {
	// WatermarkMillis is the stream's watermark (math.MinInt64: none yet).
	WatermarkMillis int64
	// LastEmptyMillis is when (clock) the stream last started a pull that
	// left the subscription empty (returned fewer messages than asked).
	LastEmptyMillis int64
	// LastMessageMillis is when (clock) the stream last pulled a message,
	// wrote one, or was held back by the flow control: idleness counts
	// from it. 0 before the first session.
	LastMessageMillis int64
	StartedMillis     int64
	Pulled            int64
	Written           int64
	Done              bool
}

// pullEstimator is the watermark estimator of pullFn. The SDK harness
// reads it from its own goroutines for progress and split requests while
// ProcessElement runs, so every access holds mu.
type pullEstimator struct {
	mu sync.Mutex
	s  PullState
}

// CurrentWatermark implements sdf.WatermarkEstimator.
func (e *pullEstimator) CurrentWatermark() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.s.Done:
		return mtime.MaxTimestamp.ToTime()
	case e.s.WatermarkMillis == math.MinInt64:
		return mtime.MinTimestamp.ToTime()
	}
	return time.UnixMilli(e.s.WatermarkMillis)
}

func (e *pullEstimator) state() PullState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s
}

func (e *pullEstimator) update(f func(s *PullState)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(&e.s)
}

type pullFn struct {
	Subscription           string
	EmulatorHost           string
	BatchSize              int
	Streams                int
	MaxOutstandingMessages int
	MaxOutstandingBytes    int64
	MaxDeliveryDelayMs     int64
	LatenessMs             int64
	IdleTimeoutMs          int64
	StopAfterMs            int64
	MaxMessages            int64
	StaleAfterMs           int64
	Clock                  clock.Clock
	Write                  writeFnConfig
	ExitBeforeComplete     bool

	client *vkit.SubscriptionAdminClient
	writer *batchWriter
	flow   *flowControl
	// records holds each stream's record as this instance last wrote it.
	mu        sync.Mutex
	records   map[int]*completion.Record
	lastPrune time.Time
	observer  *completion.Observer // of stream 0: remembers the hours it saw complete
}

// A stream's restriction is [stream<<streamShift, (stream+1)<<streamShift-1):
// one offset per batch.
const streamShift = 40

// Timing of the streams.
const (
	session        = 5 * time.Second        // real time: a stream checkpoints (and reports its watermark) this often
	pullWait       = 2 * time.Second        // real time: one Pull waits at most this
	emptyBackoff   = 200 * time.Millisecond // real time: resume delay after an idle session
	heartbeatEvery = 10 * time.Second       // clock: a stream rewrites its record this often
	leaseEvery     = 10 * time.Second       // clock: outstanding messages' ack deadlines are extended this often
	leaseSeconds   = 60                     // by this much
	ackChunk       = 500                    // ack ids per request (the API limit is by request size)
)

func (fn *pullFn) Setup(ctx context.Context) error {
	var err error
	if fn.client, err = env.subscriber(ctx, fn.EmulatorHost); err != nil {
		return err
	}
	if fn.writer, err = newBatchWriter(ctx, fn.Write); err != nil {
		return err
	}
	fn.flow = env.flowFor(fn.EmulatorHost+"\x00"+fn.Subscription+"\x00"+fn.Write.Root+"\x00"+fn.Write.RunID, fn.MaxOutstandingMessages, fn.MaxOutstandingBytes)
	fn.records = map[int]*completion.Record{}
	return nil
}

func (fn *pullFn) CreateInitialRestriction(_ []byte) offsetrange.Restriction {
	return offsetrange.Restriction{Start: 0, End: int64(fn.Streams) << streamShift}
}

// SplitRestriction makes one restriction per stream.
func (fn *pullFn) SplitRestriction(_ []byte, rest offsetrange.Restriction) []offsetrange.Restriction {
	out := make([]offsetrange.Restriction, 0, fn.Streams)
	for i := int64(0); i < int64(fn.Streams); i++ {
		out = append(out, offsetrange.Restriction{Start: i << streamShift, End: (i+1)<<streamShift - 1})
	}
	return out
}

func (fn *pullFn) RestrictionSize(_ []byte, rest offsetrange.Restriction) float64 { return 1 }

// CreateTracker makes a tracker the runner can checkpoint but not split:
// a stream is one writer with one record, and two halves of it running at
// once would write the same record.
func (fn *pullFn) CreateTracker(rest offsetrange.Restriction) *sdf.LockRTracker {
	return sdf.NewLockRTracker(&streamTracker{offsetrange.NewTracker(rest)})
}

// streamTracker is an offset-range tracker that splits only at fraction 0
// (a checkpoint: the rest of the stream continues later).
type streamTracker struct{ *offsetrange.Tracker }

func (t *streamTracker) TrySplit(fraction float64) (any, any, error) {
	if fraction > 0 {
		return t.GetRestriction(), nil, nil
	}
	return t.Tracker.TrySplit(0)
}

// TruncateRestriction stops reading on a runner's drain.
func (fn *pullFn) TruncateRestriction(rt *sdf.LockRTracker, _ []byte) offsetrange.Restriction {
	start := rt.GetRestriction().(offsetrange.Restriction).Start
	return offsetrange.Restriction{Start: start, End: start}
}

func (fn *pullFn) InitialWatermarkEstimatorState(_ beam.EventTime, _ offsetrange.Restriction, _ []byte) PullState {
	return PullState{WatermarkMillis: math.MinInt64}
}

func (fn *pullFn) CreateWatermarkEstimator(s PullState) *pullEstimator {
	return &pullEstimator{s: s}
}

func (fn *pullFn) WatermarkEstimatorState(e *pullEstimator) PullState { return e.state() }

// pulled is one pulled batch in a session.
type pulled struct {
	batch Batch
	bytes int64
}

// ProcessElement runs one session of a stream: it pulls, writes and
// acknowledges for up to session, then returns with nothing outstanding.
func (fn *pullFn) ProcessElement(ctx context.Context, we *pullEstimator, rt *sdf.LockRTracker, _ []byte, emit func(string)) (sdf.ProcessContinuation, error) {
	rest := rt.GetRestriction().(offsetrange.Restriction)
	stream := int(rest.Start >> streamShift)
	clk := fn.Clock
	st := we.state()
	now := clk.Now()
	if st.LastMessageMillis == 0 {
		we.update(func(s *PullState) { s.LastMessageMillis, s.StartedMillis = now.UnixMilli(), now.UnixMilli() })
		st = we.state()
	}
	rec, err := fn.record(ctx, stream, st)
	if err != nil {
		return nil, err
	}
	if stop, why := fn.stopRequested(ctx, st, now); stop {
		return fn.finish(ctx, we, rt, stream, completion.StateStopped, why)
	}

	s := &streamSession{fn: fn, stream: stream, rt: rt, next: rest.Start, tracker: newOutstanding(), state: st, nonce: nonce()}
	errc := make(chan error, 1)
	files := make(chan writeResult, 16)
	s.run(ctx, time.Now().Add(session), errc, files)
	// This goroutine emits what the writers wrote and keeps the stream's
	// record fresh (a held batch can keep a session going for long).
	beat := clk.NewTicker(heartbeatEvery)
	defer beat.Stop()
	var runErr error
	// The names are emitted when the session ends, not as they come: prism
	// splits a bundle (and runs the other streams beside this one) only
	// while it sees no output from it.
	var written []string
	counts := map[string]int64{}
	for collecting := true; collecting; {
		select {
		case res, ok := <-files:
			if !ok {
				collecting = false
				break
			}
			written = append(written, res.files...)
			for name, n := range res.counts {
				counts[name] += n
			}
		case err := <-errc:
			if runErr == nil {
				runErr = err
			}
		case <-beat.C:
			if err := s.beat(ctx, rec); err != nil && runErr == nil {
				runErr = err
				s.cancel()
			}
		}
	}
	if runErr == nil {
		select {
		case runErr = <-errc:
		default:
		}
	}
	fn.writer.report(ctx, counts) // from this goroutine: Beam's counters are not concurrency-safe
	for _, f := range written {
		emit(f)
	}
	// Everything pulled in the session is written and acknowledged (or, on
	// an error, unacknowledged and left to expire): the watermark moves on.
	final := s.snapshot()
	final.WatermarkMillis = s.watermark(clk.Now())
	if s.pulledAny {
		// The session's last batch was written just now (a held batch can
		// take long): idleness counts from here.
		final.LastMessageMillis = clk.Now().UnixMilli()
	}
	we.update(func(p *PullState) { *p = final })
	if runErr != nil {
		return nil, runErr
	}
	if err := fn.heartbeat(ctx, rec, final, completion.StateRunning, ""); err != nil {
		return nil, err
	}
	if stream == 0 {
		if err := fn.observe(ctx, rec); err != nil {
			// Observing again at the next heartbeat is as good.
			log.Warnf(ctx, "lockstream: observe hour completion: %v", err)
		}
	}
	now = clk.Now()
	switch {
	case fn.IdleTimeoutMs > 0 && now.UnixMilli()-final.LastMessageMillis >= fn.IdleTimeoutMs:
		return fn.finish(ctx, we, rt, stream, completion.StateDrained, fmt.Sprintf("idle for %s", time.Duration(fn.IdleTimeoutMs)*time.Millisecond))
	case s.stopped:
		return fn.finish(ctx, we, rt, stream, completion.StateStopped, s.stopWhy)
	case s.exhausted:
		return sdf.StopProcessing(), nil // split away by the runner (checkpoint, drain)
	}
	if s.pulledAny {
		return sdf.ResumeProcessingIn(0), nil
	}
	return sdf.ResumeProcessingIn(emptyBackoff), nil
}

// stopRequested reports a planned stop: StopAfter reached, MaxMessages
// pulled, or the run's stop object created.
func (fn *pullFn) stopRequested(ctx context.Context, st PullState, now time.Time) (bool, string) {
	if fn.StopAfterMs > 0 && now.UnixMilli()-st.StartedMillis >= fn.StopAfterMs {
		return true, fmt.Sprintf("stop after %s", time.Duration(fn.StopAfterMs)*time.Millisecond)
	}
	if fn.MaxMessages > 0 && st.Pulled >= fn.MaxMessages {
		return true, fmt.Sprintf("%d messages pulled (max %d)", st.Pulled, fn.MaxMessages)
	}
	if ok, err := fn.writer.bucket.Exists(ctx, layout.WriterStop(fn.Write.RunID)); err == nil && ok {
		return true, "stop requested (" + layout.WriterStop(fn.Write.RunID) + ")"
	}
	return false, ""
}

// finish ends a stream: it records its final state and marks the
// restriction done.
func (fn *pullFn) finish(ctx context.Context, we *pullEstimator, rt *sdf.LockRTracker, stream int, state, why string) (sdf.ProcessContinuation, error) {
	st := we.state()
	rec, err := fn.record(ctx, stream, st)
	if err != nil {
		return nil, err
	}
	if err := fn.heartbeat(ctx, rec, st, state, why); err != nil {
		return nil, err
	}
	log.Infof(ctx, "lockstream: pull stream %d of run %s %s: %s", stream, fn.Write.RunID, state, why)
	if err := fn.observe(ctx, rec); err != nil {
		// The run's end (or the next run) observes again.
		log.Warnf(ctx, "lockstream: observe hour completion: %v", err)
	}
	we.update(func(s *PullState) { s.Done = true })
	rt.TryClaim(rt.GetRestriction().(offsetrange.Restriction).End) // marks the restriction done
	return sdf.StopProcessing(), nil
}

// record returns the stream's record, reading or creating it on the
// stream's first session in this DoFn instance.
func (fn *pullFn) record(ctx context.Context, stream int, st PullState) (*completion.Record, error) {
	fn.mu.Lock()
	rec := fn.records[stream]
	fn.mu.Unlock()
	if rec != nil {
		return rec, nil
	}
	part := fmt.Sprintf("stream-%03d", stream)
	name := layout.WriterRecord(fn.Write.RunID, part)
	rec = &completion.Record{RunID: fn.Write.RunID, Part: part, Kind: completion.KindStream, Source: fn.Subscription,
		State: completion.StateRunning, Lateness: completion.Duration(time.Duration(fn.LatenessMs) * time.Millisecond),
		StaleAfter: completion.Duration(time.Duration(fn.StaleAfterMs) * time.Millisecond), StartedAt: time.UnixMilli(st.StartedMillis).UTC(), Name: name}
	if _, gen, err := fn.writer.bucket.ReadVersion(ctx, name); err == nil {
		rec.Generation = gen // an earlier session, in another instance
	} else if !errors.Is(err, blob.ErrNotExist) {
		return nil, err
	}
	// The record exists before the stream pulls: a stream holds every hour
	// from its first message on.
	if err := fn.heartbeat(ctx, rec, st, completion.StateRunning, ""); err != nil {
		return nil, err
	}
	fn.mu.Lock()
	fn.records[stream] = rec
	fn.mu.Unlock()
	return rec, nil
}

// heartbeat rewrites a stream's record from its state.
func (fn *pullFn) heartbeat(ctx context.Context, rec *completion.Record, st PullState, state, note string) error {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	rec.State, rec.Note = state, note
	rec.HeartbeatAt = fn.Clock.Now()
	rec.Pulled, rec.Written = st.Pulled, st.Written
	rec.Watermark = nil
	if st.WatermarkMillis != math.MinInt64 {
		w := time.UnixMilli(st.WatermarkMillis).UTC()
		rec.Watermark = &w
	}
	err := completion.Write(ctx, fn.writer.bucket, rec)
	if errors.Is(err, blob.ErrPrecondition) {
		// Written by another instance since (this stream's previous
		// sessions ran there): take its generation.
		if _, gen, rerr := fn.writer.bucket.ReadVersion(ctx, rec.Name); rerr == nil {
			rec.Generation = gen
			err = completion.Write(ctx, fn.writer.bucket, rec)
		}
	}
	if err != nil {
		return fmt.Errorf("transforms: record of %s: %w", rec.ID(), err)
	}
	return nil
}

// observe decides the completion of the open hours of the root and marks
// those that are complete.
func (fn *pullFn) observe(ctx context.Context, rec *completion.Record) error {
	if fn.observer == nil {
		fn.observer = &completion.Observer{Bucket: fn.writer.bucket, Name: rec.ID(), Now: fn.Clock.Now}
	}
	o := fn.observer
	hours, err := o.OpenHours(ctx)
	if err != nil {
		return err
	}
	if fn.ExitBeforeComplete {
		o.BeforeMark = func(h layout.Hour) error {
			// Straight to stderr: Beam's log line may not get out before the kill.
			fmt.Fprintf(os.Stderr, "lockstream: test hook: killing the process before marking %s complete\n", h)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	ds, err := o.Observe(ctx, hours)
	for _, d := range ds {
		if d.MarkedNow {
			env.progress.closed.Add(1)
		}
	}
	if now := fn.Clock.Now(); err == nil && now.Sub(fn.lastPrune) >= time.Hour {
		// Old runs' records can decide nothing any more.
		fn.lastPrune = now
		if _, perr := completion.Prune(ctx, fn.writer.bucket, now, completion.DefaultKeepRecords); perr != nil {
			log.Warnf(ctx, "lockstream: prune old writer records: %v", perr)
		}
	}
	return err
}
