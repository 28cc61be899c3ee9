package transforms

import (
	"context"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/sdf"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"

	"github.com/lockstream/lockstream/completion"
)

// A stream's session: pull, write, ack and lease what it pulled for one
// session (see pullFn.ProcessElement), and the watermark it reports.

func nonce() string {
	var b [4]byte
	for i := range b {
		b[i] = byte(rand.N(256))
	}
	return hex.EncodeToString(b[:])
}

// streamSession is one session of one stream.
type streamSession struct {
	fn      *pullFn
	stream  int
	rt      *sdf.LockRTracker
	next    int64
	nonce   string
	tracker *outstanding

	cancel func()

	mu        sync.Mutex
	state     PullState
	pulledAny bool
	stopped   bool
	stopWhy   string
	exhausted bool
}

func (s *streamSession) snapshot() PullState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// beat rewrites the stream's record with its current watermark, looks for
// a stop request, and (stream 0) observes the completion of open hours.
func (s *streamSession) beat(ctx context.Context, rec *completion.Record) error {
	fn := s.fn
	now := fn.Clock.Now()
	w := s.watermark(now)
	s.mu.Lock()
	s.state.WatermarkMillis = w
	st := s.state
	s.mu.Unlock()
	if err := fn.heartbeat(ctx, rec, st, completion.StateRunning, ""); err != nil {
		return err
	}
	if stop, why := fn.stopRequested(ctx, st, now); stop {
		s.mu.Lock()
		s.stopped, s.stopWhy = true, why
		s.mu.Unlock()
	}
	if s.stream == 0 {
		if err := fn.observe(ctx, rec); err != nil {
			log.Warnf(ctx, "lockstream: observe hour completion: %v", err)
		}
	}
	return nil
}

// run starts the session's puller, writers and lease keeper; files gets
// what each batch wrote and is closed when the session is over.
func (s *streamSession) run(ctx context.Context, end time.Time, errc chan<- error, files chan<- writeResult) {
	fn := s.fn
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	work := make(chan *pulled, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	var writers sync.WaitGroup
	nw := max(2, runtime.GOMAXPROCS(0))
	for range nw {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for p := range work {
				if ctx.Err() != nil {
					continue // failed session: leave the rest unacknowledged
				}
				res, err := fn.writer.write(ctx, &p.batch, true)
				if err != nil {
					fail(err)
					continue
				}
				ackErr := acknowledge(ctx, fn.client, fn.Subscription, p.batch.AckIDs)
				if ackErr != nil {
					// The output is durable; only the ack failed. Pub/Sub
					// redelivers these messages (at once if it takes them
					// back now, else when their lease expires), raw gets
					// duplicates that hourly drops: nothing is lost, so the
					// run goes on. Until then they hold the watermark.
					_ = modifyDeadline(ctx, fn.client, fn.Subscription, p.batch.AckIDs, 0)
					log.Warnf(ctx, "lockstream: %d messages written but not acknowledged (they will be redelivered and deduplicated): %v", len(p.batch.AckIDs), ackErr)
				}
				s.tracker.done(p.batch.AckIDs, ackErr != nil, fn.Clock.Now().Add(2*leaseSeconds*time.Second))
				fn.flow.release(len(p.batch.AckIDs), p.bytes)
				if ackErr != nil {
					env.progress.ackFailed.Add(int64(len(p.batch.AckIDs)))
				} else {
					env.progress.acked.Add(int64(len(p.batch.AckIDs)))
				}
				s.mu.Lock()
				s.state.Written += res.written + res.late
				s.mu.Unlock()
				files <- res
			}
		}()
	}
	leaseDone := make(chan struct{})
	go func() {
		defer close(leaseDone)
		s.keepLeases(ctx)
	}()
	go func() {
		s.pull(ctx, end, work, fail)
		close(work)
		writers.Wait()
		cancel() // stops the lease keeper: nothing is outstanding any more
		<-leaseDone
		close(files)
	}()
}

// pull is the session's puller: it pulls batches while the flow control
// lets it, until end (real time) or a stop.
func (s *streamSession) pull(ctx context.Context, end time.Time, work chan<- *pulled, fail func(error)) {
	fn := s.fn
	clk := fn.Clock
	for time.Now().Before(end) && ctx.Err() == nil {
		st := s.snapshot()
		now := clk.Now()
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		if (fn.StopAfterMs > 0 && now.UnixMilli()-st.StartedMillis >= fn.StopAfterMs) || (fn.MaxMessages > 0 && st.Pulled >= fn.MaxMessages) {
			_, why := fn.stopRequested(ctx, st, now)
			s.mu.Lock()
			s.stopped, s.stopWhy = true, why
			s.mu.Unlock()
			return
		}
		if fn.IdleTimeoutMs > 0 && now.UnixMilli()-st.LastMessageMillis >= fn.IdleTimeoutMs {
			return
		}
		want := fn.BatchSize
		if fn.MaxMessages > 0 {
			want = int(min(int64(want), max(1, fn.MaxMessages-st.Pulled)))
		}
		n, err := fn.flow.acquire(ctx, want, min(time.Until(end), 500*time.Millisecond))
		if err != nil || n == 0 {
			// The worker holds all it may: not idle, just busy.
			s.mu.Lock()
			s.state.LastMessageMillis = clk.Now().UnixMilli()
			s.mu.Unlock()
			continue
		}
		started := clk.Now()
		pctx, pcancel := context.WithTimeout(ctx, pullWait)
		resp, err := fn.client.Pull(pctx, &pubsubpb.PullRequest{Subscription: fn.Subscription, MaxMessages: int32(n)})
		pcancel()
		if ctx.Err() != nil {
			fn.flow.release(n, 0)
			return
		}
		if err != nil && !isDeadline(err) {
			fn.flow.release(n, 0)
			// Transient server trouble: try again after a pause.
			log.Warnf(ctx, "lockstream: pull %s: %v", fn.Subscription, err)
			if clk.Sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		msgs := resp.GetReceivedMessages()
		fn.flow.release(n-len(msgs), 0)
		s.mu.Lock()
		if len(msgs) < n {
			// The subscription had no more for us: everything published
			// before started-MaxDeliveryDelay has been delivered.
			s.state.LastEmptyMillis = started.UnixMilli()
		}
		s.mu.Unlock()
		if len(msgs) == 0 {
			continue
		}
		pos := s.next
		s.next++
		if !s.rt.TryClaim(pos) {
			// Split away (checkpoint, drain): hand the messages back.
			ids := make([]string, len(msgs))
			for i, rm := range msgs {
				ids[i] = rm.GetAckId()
			}
			_ = modifyDeadline(context.WithoutCancel(ctx), fn.client, fn.Subscription, ids, 0)
			fn.flow.release(len(msgs), 0)
			s.mu.Lock()
			s.exhausted = true
			s.mu.Unlock()
			return
		}
		p := &pulled{batch: Batch{
			ID:           fn.Write.RunID + "-s" + strconv.Itoa(s.stream) + "-" + s.nonce + "-" + strconv.FormatInt(pos&(1<<streamShift-1), 10),
			Subscription: fn.Subscription,
			Messages:     make([]BatchMessage, len(msgs)),
			AckIDs:       make([]string, len(msgs)),
		}}
		minPT := int64(math.MaxInt64)
		pts := make([]int64, len(msgs))
		for i, rm := range msgs {
			m := rm.GetMessage()
			pt := m.GetPublishTime().AsTime().UnixMilli()
			minPT = min(minPT, pt)
			pts[i] = pt
			p.batch.Messages[i] = BatchMessage{ID: m.GetMessageId(), PublishMillis: pt, Attributes: m.GetAttributes(), Data: m.GetData()}
			p.batch.AckIDs[i] = rm.GetAckId()
			p.bytes += int64(len(m.GetData()) + len(rm.GetAckId()) + 64)
			for k, v := range m.GetAttributes() {
				p.bytes += int64(len(k) + len(v))
			}
		}
		p.batch.TimeMillis = minPT
		s.tracker.add(p.batch.AckIDs, pts)
		fn.flow.addBytes(p.bytes)
		s.mu.Lock()
		s.state.Pulled += int64(len(msgs))
		s.state.LastMessageMillis = clk.Now().UnixMilli()
		s.pulledAny = true
		s.mu.Unlock()
		select {
		case work <- p:
		case <-ctx.Done():
			return
		}
	}
}

// watermark is the stream's watermark now: the oldest publish time it
// holds, and at most its last empty pull minus the delivery delay; never
// behind what it reported before (math.MinInt64: none yet).
func (s *streamSession) watermark(now time.Time) int64 {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st.LastEmptyMillis == 0 {
		return st.WatermarkMillis
	}
	w := st.LastEmptyMillis - s.fn.MaxDeliveryDelayMs
	if o, ok := s.tracker.oldest(now); ok {
		w = min(w, o)
	}
	return max(w, st.WatermarkMillis)
}

// keepLeases extends the ack deadlines of every outstanding message of the
// session, from the pull to the ack, until ctx ends.
func (s *streamSession) keepLeases(ctx context.Context) {
	fn := s.fn
	t := fn.Clock.NewTicker(leaseEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ids := s.tracker.active()
			if err := modifyDeadline(ctx, fn.client, fn.Subscription, ids, leaseSeconds); err != nil && ctx.Err() == nil {
				log.Warnf(ctx, "lockstream: extend leases of %d messages on %s: %v", len(ids), fn.Subscription, err)
			}
		}
	}
}
