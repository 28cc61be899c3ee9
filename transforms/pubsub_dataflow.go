package transforms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/timers"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/typex"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/util/protox"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/util/reflectx"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/periodic"
	"google.golang.org/protobuf/proto"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/layout"
)

func init() {
	register.DoFn4x1[context.Context, beam.EventTime, []byte, func(string), error](&writeMessagesFn{})
	register.DoFn5x1[context.Context, state.Provider, timers.Provider, string, int64, error](&trackWriterFn{})
	register.Function2x0(dropAll)
	register.Function2x0(tickKey)
	register.Emitter2[string, int64]()
}

// pubsubReadURN is the URN of Beam's Pub/Sub read, which Dataflow runs
// natively (prism and the other portable runners reject it).
const pubsubReadURN = "beam:transform:pubsub_read:v1"

// PubSubDataflowConfig configures IngestPubSubDataflow.
type PubSubDataflowConfig struct {
	Subscription string // projects/P/subscriptions/S
	BatchSize    int    // most messages per batch (one file per type and hour; a key lookup per 500 messages)
	Lateness     time.Duration
	StaleAfter   time.Duration // 0 = completion.DefaultStaleAfter
	Write        WriteConfig
}

// IngestPubSubDataflow reads a subscription with Beam's native Pub/Sub read
// (Dataflow only: Dataflow checkpoints the read, acknowledges messages once
// the bundle that read them is committed, and dedupes redeliveries by
// message id) and writes it as IngestPubSub does.
//
// Batching: a batch is at most BatchSize messages of one bundle. Full
// batches are written as they fill; the rest of a bundle is written in
// FinishBundle, so every message's files are durable before Dataflow
// commits the bundle (and acks it). Streaming Dataflow bundles are small
// (often tens to hundreds of messages), so batches, and with them key
// lookups and files, follow the bundle size rather than BatchSize.
//
// Hour completion: one writer record (writers/<run>/dataflow.json) is kept
// by a keyed stage that fires a processing-time timer every heartbeat and
// an event-time timer every minute: when the event-time timer for t fires,
// the read's watermark (Dataflow's estimate of the oldest unacked publish
// time) has passed t, and the record says so.
func IngestPubSubDataflow(s beam.Scope, cfg PubSubDataflowConfig) (beam.PCollection, error) {
	p := strings.Split(cfg.Subscription, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "subscriptions" || p[3] == "" {
		return beam.PCollection{}, fmt.Errorf("transforms.IngestPubSubDataflow: subscription %q is not projects/P/subscriptions/S", cfg.Subscription)
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > MaxBatchSize {
		return beam.PCollection{}, fmt.Errorf("transforms.IngestPubSubDataflow: BatchSize %d not in 1..%d", cfg.BatchSize, MaxBatchSize)
	}
	if cfg.Lateness < 0 || cfg.StaleAfter < 0 {
		return beam.PCollection{}, errors.New("transforms.IngestPubSubDataflow: Lateness and StaleAfter must be >= 0")
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = completion.DefaultStaleAfter
	}
	if err := cfg.Write.validate(); err != nil {
		return beam.PCollection{}, err
	}
	s = s.Scope("transforms.IngestPubSubDataflow")
	// Beam's pubsubio.Read issues this external transform; it is not
	// imported because it needs genproto's googleapis/pubsub/v1, which the
	// genproto the Cloud libraries require no longer has. The messages are
	// the same wire format (google.pubsub.v1.PubsubMessage).
	payload := &pipepb.PubSubReadPayload{Subscription: cfg.Subscription, WithAttributes: true}
	raw := beam.External(s, pubsubReadURN, protox.MustEncode(payload), nil, []beam.FullType{typex.New(reflectx.ByteSlice)}, false)[0]
	files := beam.ParDo(s, &writeMessagesFn{Config: toFnConfig(cfg.Write), BatchSize: cfg.BatchSize}, raw)

	// The record's watermark: the read's, carried by a PCollection that
	// holds no element, flattened with a tick every heartbeat.
	carrier := beam.ParDo(s, dropAll, raw)
	ticks := beam.ParDo(s, tickKey, periodic.Impulse(s, time.Now(), mtime.MaxTimestamp.ToTime(), heartbeatEvery, false))
	beam.ParDo0(s, &trackWriterFn{Root: cfg.Write.Root, RunID: cfg.Write.RunID, Source: cfg.Subscription,
		LatenessMs: cfg.Lateness.Milliseconds(), StaleAfterMs: cfg.StaleAfter.Milliseconds(),
		Beat: timers.InProcessingTime("beat"), Mark: timers.InEventTime("mark")},
		beam.Flatten(s, carrier, ticks))
	return files, nil
}

func dropAll(_ []byte, _ func(string, int64)) {}

func tickKey(_ []byte, emit func(string, int64)) { emit("writer", 0) }

// writeMessagesFn batches the messages of a bundle and writes them.
type writeMessagesFn struct {
	Config    writeFnConfig
	BatchSize int

	w     *batchWriter
	nonce string
	seq   int
	buf   Batch
}

func (fn *writeMessagesFn) Setup(ctx context.Context) error {
	var err error
	fn.w, err = newBatchWriter(ctx, fn.Config)
	fn.nonce = nonce()
	return err
}

func (fn *writeMessagesFn) ProcessElement(ctx context.Context, ts beam.EventTime, raw []byte, emit func(string)) error {
	var m pubsubpb.PubsubMessage
	if err := proto.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("transforms: Pub/Sub message: %w", err)
	}
	pt := ts.Milliseconds()
	if m.GetPublishTime() != nil {
		pt = m.GetPublishTime().AsTime().UnixMilli()
	}
	id := m.GetMessageId()
	if id == "" {
		sum := sha256.Sum256(raw)
		id = "sha256:" + hex.EncodeToString(sum[:12])
	}
	if len(fn.buf.Messages) == 0 {
		fn.buf.TimeMillis = math.MaxInt64
	}
	fn.buf.Messages = append(fn.buf.Messages, BatchMessage{ID: id, PublishMillis: pt, Attributes: m.GetAttributes(), Data: m.GetData()})
	fn.buf.TimeMillis = min(fn.buf.TimeMillis, pt)
	if len(fn.buf.Messages) >= fn.BatchSize {
		return fn.flush(ctx, emit)
	}
	return nil
}

// FinishBundle writes the rest of the bundle before Dataflow commits it.
func (fn *writeMessagesFn) FinishBundle(ctx context.Context, emit func(string)) error {
	return fn.flush(ctx, emit)
}

func (fn *writeMessagesFn) flush(ctx context.Context, emit func(string)) error {
	if len(fn.buf.Messages) == 0 {
		return nil
	}
	fn.buf.ID = fn.Config.RunID + "-d" + fn.nonce + "-" + strconv.Itoa(fn.seq)
	fn.seq++
	b := fn.buf
	fn.buf = Batch{}
	res, err := fn.w.write(ctx, &b, true)
	if err != nil {
		return err
	}
	fn.w.report(ctx, res.counts)
	for _, f := range res.files {
		emit(f)
	}
	return nil
}

// trackWriterFn keeps the writer record of a Dataflow read.
type trackWriterFn struct {
	Root         string
	RunID        string
	Source       string
	LatenessMs   int64
	StaleAfterMs int64

	Beat timers.ProcessingTime
	Mark timers.EventTime
	// WatermarkMillis is the last event-time timer that fired (0: none).
	WatermarkMillis state.Value[int64]

	bucket   blob.Bucket
	rec      *completion.Record
	observer *completion.Observer
}

func (fn *trackWriterFn) Setup(ctx context.Context) error {
	var err error
	fn.bucket, err = blob.Open(ctx, fn.Root)
	return err
}

func (fn *trackWriterFn) ProcessElement(ctx context.Context, sp state.Provider, tp timers.Provider, _ string, _ int64) error {
	if _, ok, err := fn.WatermarkMillis.Read(sp); err != nil || ok {
		return err
	}
	now := time.Now()
	fn.Beat.Set(tp, now.Add(heartbeatEvery))
	fn.Mark.Set(tp, now.Truncate(time.Minute).Add(time.Minute))
	return fn.WatermarkMillis.Write(sp, math.MinInt64)
}

// OnTimer gets the firing time of the event-time timer as ts.
func (fn *trackWriterFn) OnTimer(ctx context.Context, ts beam.EventTime, sp state.Provider, tp timers.Provider, _ string, t timers.Context) error {
	w, _, err := fn.WatermarkMillis.Read(sp)
	if err != nil {
		return err
	}
	switch t.Family {
	case fn.Mark.Family:
		w = ts.Milliseconds()
		if err := fn.WatermarkMillis.Write(sp, w); err != nil {
			return err
		}
		fn.Mark.Set(tp, ts.ToTime().Add(time.Minute))
	case fn.Beat.Family:
		fn.Beat.Set(tp, time.Now().Add(heartbeatEvery))
	}
	return fn.write(ctx, w)
}

func (fn *trackWriterFn) write(ctx context.Context, w int64) error {
	if fn.rec == nil {
		fn.rec = &completion.Record{RunID: fn.RunID, Part: "dataflow", Kind: completion.KindStream, Source: fn.Source,
			State: completion.StateRunning, Lateness: completion.Duration(time.Duration(fn.LatenessMs) * time.Millisecond),
			StaleAfter: completion.Duration(time.Duration(fn.StaleAfterMs) * time.Millisecond), StartedAt: time.Now().UTC(),
			Name: layout.WriterRecord(fn.RunID, "dataflow")}
		if _, gen, err := fn.bucket.ReadVersion(ctx, fn.rec.Name); err == nil {
			fn.rec.Generation = gen
		}
	}
	fn.rec.HeartbeatAt = time.Now().UTC()
	fn.rec.Watermark = nil
	if w != math.MinInt64 && w != 0 {
		t := time.UnixMilli(w).UTC()
		fn.rec.Watermark = &t
	}
	if err := completion.Write(ctx, fn.bucket, fn.rec); err != nil {
		if _, gen, rerr := fn.bucket.ReadVersion(ctx, fn.rec.Name); rerr == nil {
			fn.rec.Generation = gen
			err = completion.Write(ctx, fn.bucket, fn.rec)
		}
		if err != nil {
			log.Warnf(ctx, "lockstream: writer record %s: %v", fn.rec.ID(), err)
			return nil // the next beat tries again
		}
	}
	if fn.observer == nil {
		fn.observer = &completion.Observer{Bucket: fn.bucket, Name: fn.rec.ID(), Now: func() time.Time { return time.Now().UTC() }}
	}
	hours, err := fn.observer.OpenHours(ctx)
	if err != nil {
		log.Warnf(ctx, "lockstream: open hours: %v", err)
		return nil
	}
	if _, err := fn.observer.Observe(ctx, hours); err != nil {
		log.Warnf(ctx, "lockstream: observe hour completion: %v", err)
	}
	return nil
}
