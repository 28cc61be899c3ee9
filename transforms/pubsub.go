package transforms

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/sdf"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/rtrackers/offsetrange"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
)

func init() {
	register.DoFn5x2[context.Context, *pullEstimator, *sdf.LockRTracker, []byte, func(beam.EventTime, Batch), sdf.ProcessContinuation, error](&pullFn{})
	beam.RegisterType(reflect.TypeOf(PullState{}))
}

// PubSubConfig configures ReadPubSub.
type PubSubConfig struct {
	// Subscription is "projects/P/subscriptions/S". The client honours
	// PUBSUB_EMULATOR_HOST.
	Subscription string
	BatchSize    int // messages per Pull (and batch), 1..1000
	// IdleTimeout > 0 stops the source when no message arrived for that long;
	// its watermark then goes to +inf and every open hour closes (like a
	// Dataflow drain). 0 reads forever.
	IdleTimeout time.Duration
	// MaxMessages > 0 stops the source after about that many messages (it
	// stops after the Pull that reaches it).
	MaxMessages int64
	RunID       string // prefix of batch ids
}

// MaxPullSize is the largest Pub/Sub Pull.
const MaxPullSize = 1000

func (c PubSubConfig) validate() error {
	p := strings.Split(c.Subscription, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "subscriptions" || p[3] == "" {
		return fmt.Errorf("transforms.ReadPubSub: subscription %q is not projects/P/subscriptions/S", c.Subscription)
	}
	if c.BatchSize < 1 || c.BatchSize > MaxPullSize {
		return fmt.Errorf("transforms.ReadPubSub: BatchSize %d not in 1..%d", c.BatchSize, MaxPullSize)
	}
	if c.IdleTimeout < 0 || c.MaxMessages < 0 {
		return errors.New("transforms.ReadPubSub: IdleTimeout and MaxMessages must be >= 0")
	}
	return validRunID(c.RunID)
}

// ReadPubSub reads a Pub/Sub subscription with synchronous Pulls, one batch
// per Pull, carrying the ack ids: the write stage acknowledges them after
// their output is durable. It is an unbounded splittable DoFn whose
// watermark follows publish times (see the package doc). Invalid
// configuration panics at construction.
func ReadPubSub(s beam.Scope, cfg PubSubConfig) beam.PCollection {
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	s = s.Scope("transforms.ReadPubSub")
	imp := beam.Impulse(s)
	return beam.ParDo(s, &pullFn{
		Subscription: cfg.Subscription, BatchSize: cfg.BatchSize,
		IdleTimeoutMs: cfg.IdleTimeout.Milliseconds(), MaxMessages: cfg.MaxMessages, RunID: cfg.RunID,
	}, imp)
}

// PullState is the watermark-estimator state of the Pub/Sub source, carried
// across checkpoints: the watermark, when a message last arrived, and how
// many were pulled.
type PullState struct {
	WatermarkMillis   int64
	LastMessageMillis int64 // 0 until the first ProcessElement
	Pulled            int64
	Done              bool
}

// pullEstimator is the watermark estimator of pullFn. The SDK harness
// reads it (CurrentWatermark, WatermarkEstimatorState) from its own
// goroutines for progress and split requests while ProcessElement runs, so
// every write holds mu, and so does every read from outside
// ProcessElement. ProcessElement, the only writer, reads s without it.
type pullEstimator struct {
	mu sync.Mutex
	s  PullState
}

// CurrentWatermark implements sdf.WatermarkEstimator.
func (e *pullEstimator) CurrentWatermark() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.s.Done {
		return mtime.MaxTimestamp.ToTime()
	}
	return time.UnixMilli(e.s.WatermarkMillis)
}

// state is a copy of the estimator's state.
func (e *pullEstimator) state() PullState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s
}

// update changes the estimator's state (from ProcessElement only).
func (e *pullEstimator) update(f func(s *PullState)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(&e.s)
}

func (e *pullEstimator) advance(t time.Time) {
	e.update(func(s *PullState) {
		if ms := t.UnixMilli(); ms > s.WatermarkMillis {
			s.WatermarkMillis = ms
		}
	})
}

type pullFn struct {
	Subscription  string
	BatchSize     int
	IdleTimeoutMs int64
	MaxMessages   int64
	RunID         string

	client *vkit.SubscriptionAdminClient
}

// restriction end: one offset per batch; End-1 so that claiming End marks
// the tracker done without overflow.
const pullEnd = math.MaxInt64 - 1

// Timing of the pull loop.
const (
	pullWait        = 2 * time.Second        // one Pull waits at most this
	checkpointEvery = 2 * time.Second        // a bundle ends (and the watermark is reported) this often
	emptyBackoff    = 200 * time.Millisecond // resume delay after an empty Pull
	assumedLag      = 2 * time.Second        // idle subscription: watermark = now - assumedLag
)

func (fn *pullFn) Setup(ctx context.Context) error {
	var err error
	fn.client, err = subscriber(ctx)
	return err
}

func (fn *pullFn) CreateInitialRestriction(_ []byte) offsetrange.Restriction {
	return offsetrange.Restriction{Start: 0, End: pullEnd}
}

func (fn *pullFn) SplitRestriction(_ []byte, rest offsetrange.Restriction) []offsetrange.Restriction {
	return []offsetrange.Restriction{rest}
}

func (fn *pullFn) RestrictionSize(_ []byte, rest offsetrange.Restriction) float64 {
	return 1
}

func (fn *pullFn) CreateTracker(rest offsetrange.Restriction) *sdf.LockRTracker {
	return sdf.NewLockRTracker(offsetrange.NewTracker(rest))
}

// TruncateRestriction stops reading on drain.
func (fn *pullFn) TruncateRestriction(rt *sdf.LockRTracker, _ []byte) offsetrange.Restriction {
	start := rt.GetRestriction().(offsetrange.Restriction).Start
	return offsetrange.Restriction{Start: start, End: start}
}

func (fn *pullFn) InitialWatermarkEstimatorState(_ beam.EventTime, _ offsetrange.Restriction, _ []byte) PullState {
	return PullState{WatermarkMillis: mtime.MinTimestamp.Milliseconds()}
}

func (fn *pullFn) CreateWatermarkEstimator(s PullState) *pullEstimator {
	return &pullEstimator{s: s}
}

func (fn *pullFn) WatermarkEstimatorState(e *pullEstimator) PullState { return e.state() }

func (fn *pullFn) ProcessElement(ctx context.Context, we *pullEstimator, rt *sdf.LockRTracker, _ []byte, emit func(beam.EventTime, Batch)) (sdf.ProcessContinuation, error) {
	st := &we.s // read without the lock: this is the only writer
	if st.LastMessageMillis == 0 {
		now := time.Now().UnixMilli()
		we.update(func(s *PullState) { s.LastMessageMillis = now })
	}
	finish := func() (sdf.ProcessContinuation, error) {
		we.update(func(s *PullState) { s.Done = true })
		rt.TryClaim(int64(pullEnd)) // marks the restriction done
		return sdf.StopProcessing(), nil
	}
	bundleEnd := time.Now().Add(checkpointEvery)
	next := rt.GetRestriction().(offsetrange.Restriction).Start
	for {
		if st.Done || (fn.MaxMessages > 0 && st.Pulled >= fn.MaxMessages) {
			return finish()
		}
		n := fn.BatchSize
		if fn.MaxMessages > 0 {
			n = int(min(int64(n), fn.MaxMessages-st.Pulled))
		}
		pctx, cancel := context.WithTimeout(ctx, pullWait)
		resp, err := fn.client.Pull(pctx, &pubsubpb.PullRequest{Subscription: fn.Subscription, MaxMessages: int32(n)})
		cancel()
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && !isDeadline(err) {
			// Transient server trouble: try again after a pause.
			log.Warnf(ctx, "lockstream: pull %s: %v", fn.Subscription, err)
			return sdf.ResumeProcessingIn(time.Second), nil
		}
		if resp == nil || len(resp.ReceivedMessages) == 0 {
			now := time.Now()
			if fn.IdleTimeoutMs > 0 && now.UnixMilli()-st.LastMessageMillis >= fn.IdleTimeoutMs {
				return finish()
			}
			// Nothing outstanding: event time follows the clock.
			we.advance(now.Add(-assumedLag))
			return sdf.ResumeProcessingIn(emptyBackoff), nil
		}
		pos := next
		next++
		if !rt.TryClaim(pos) {
			// Split away (checkpoint/drain): hand the messages back.
			nack(ctx, fn.client, fn.Subscription, resp.ReceivedMessages)
			return sdf.StopProcessing(), nil
		}
		b := Batch{
			ID:           fn.RunID + "-p" + strconv.FormatInt(pos, 10),
			Subscription: fn.Subscription,
			Messages:     make([]BatchMessage, len(resp.ReceivedMessages)),
			AckIDs:       make([]string, len(resp.ReceivedMessages)),
		}
		minPT := int64(math.MaxInt64)
		for i, rm := range resp.ReceivedMessages {
			m := rm.GetMessage()
			pt := m.GetPublishTime().AsTime().UnixMilli()
			minPT = min(minPT, pt)
			b.Messages[i] = BatchMessage{ID: m.GetMessageId(), PublishMillis: pt, Attributes: m.GetAttributes(), Data: m.GetData()}
			b.AckIDs[i] = rm.GetAckId()
		}
		// The batch's event time is its oldest publish time, but never behind
		// the watermark already reported (then its events may be late).
		ts := max(minPT, st.WatermarkMillis)
		now := time.Now().UnixMilli()
		we.update(func(s *PullState) {
			s.Pulled += int64(len(b.Messages))
			s.LastMessageMillis = now
		})
		emit(mtime.FromMilliseconds(ts), b) // the write stage is fused: this returns after the ack
		we.advance(time.UnixMilli(minPT))
		if time.Now().After(bundleEnd) {
			return sdf.ResumeProcessingIn(0), nil
		}
	}
}

func isDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "DeadlineExceeded")
}

func nack(ctx context.Context, c *vkit.SubscriptionAdminClient, sub string, rms []*pubsubpb.ReceivedMessage) {
	ids := make([]string, len(rms))
	for i, rm := range rms {
		ids[i] = rm.GetAckId()
	}
	_ = c.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: ids, AckDeadlineSeconds: 0})
}

var subscriberClients struct {
	mu sync.Mutex
	m  map[string]*vkit.SubscriptionAdminClient // by $PUBSUB_EMULATOR_HOST ("" = Google Cloud)
}

// subscriber returns the process-wide low-level subscriber client for the
// Pub/Sub service in use (one per emulator address: tests start several).
func subscriber(ctx context.Context) (*vkit.SubscriptionAdminClient, error) {
	host := os.Getenv("PUBSUB_EMULATOR_HOST")
	subscriberClients.mu.Lock()
	defer subscriberClients.mu.Unlock()
	if c := subscriberClients.m[host]; c != nil {
		return c, nil
	}
	c, err := vkit.NewSubscriptionAdminClient(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("transforms: pubsub client: %w", err)
	}
	if subscriberClients.m == nil {
		subscriberClients.m = map[string]*vkit.SubscriptionAdminClient{}
	}
	subscriberClients.m[host] = c
	return c, nil
}

// ackChunk bounds ack ids per request (the API limit is by request size).
const ackChunk = 500

// acknowledge acks a batch's messages; it returns an error only if some
// could not be acked (they are redelivered: duplicates, never loss).
func acknowledge(ctx context.Context, sub string, ids []string) error {
	c, err := subscriber(ctx)
	if err != nil {
		return err
	}
	for i := 0; i < len(ids); i += ackChunk {
		j := min(i+ackChunk, len(ids))
		var lastErr error
		for attempt := 0; attempt < 4; attempt++ {
			if f := ackFault.Load(); f != nil {
				if lastErr = (*f)(ids[i:j]); lastErr != nil {
					continue
				}
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			lastErr = c.Acknowledge(actx, &pubsubpb.AcknowledgeRequest{Subscription: sub, AckIds: ids[i:j]})
			cancel()
			if lastErr == nil {
				break
			}
			time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
		}
		if lastErr != nil {
			return fmt.Errorf("transforms: acknowledge %d messages on %s: %w", j-i, sub, lastErr)
		}
	}
	return nil
}

// ackFault, when set, is called before each Acknowledge attempt; an error
// fails that attempt (fault-injection tests: SetAckFault).
var ackFault atomic.Pointer[func(ids []string) error]

// SetAckFault makes acknowledgements fail when f returns an error, for
// fault-injection tests; nil removes it. Not for production use.
func SetAckFault(f func(ids []string) error) {
	if f == nil {
		ackFault.Store(nil)
		return
	}
	ackFault.Store(&f)
}

// release hands messages back to Pub/Sub unacknowledged (ack deadline 0):
// they are redelivered after the subscription's retry backoff.
func release(ctx context.Context, sub string, ids []string) error {
	c, err := subscriber(ctx)
	if err != nil {
		return err
	}
	for i := 0; i < len(ids); i += ackChunk {
		j := min(i+ackChunk, len(ids))
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.ModifyAckDeadline(mctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: ids[i:j], AckDeadlineSeconds: 0})
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// Lease extension: while a batch is being written, its messages' ack
// deadlines are pushed out every leaseEvery by leaseSeconds.
const (
	leaseEvery   = 5 * time.Second
	leaseSeconds = 60
)

// keepLeases extends the ack deadlines of ids until the returned stop is
// called (stop may be called more than once).
func keepLeases(ctx context.Context, sub string, ids []string) (stop func()) {
	c, err := subscriber(ctx)
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(leaseEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				for i := 0; i < len(ids); i += ackChunk {
					j := min(i+ackChunk, len(ids))
					mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					if err := c.ModifyAckDeadline(mctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: ids[i:j], AckDeadlineSeconds: leaseSeconds}); err != nil {
						log.Warnf(ctx, "lockstream: extend leases on %s: %v", sub, err)
					}
					cancel()
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
