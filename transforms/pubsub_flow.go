package transforms

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/lockstream/lockstream/retry"
)

// What a worker holds from Pub/Sub: the outstanding messages of a stream,
// the worker's flow control, and the subscriber client's acks and lease
// extensions.

// outstanding tracks the messages a session holds: pulled and not yet
// acknowledged, or whose acknowledgement failed (they come back when their
// lease expires, so they hold the watermark until then).
type outstanding struct {
	mu sync.Mutex
	m  map[string]outstandingMsg
}

type outstandingMsg struct {
	publish int64
	until   time.Time // zero: held; else: ack failed, counts until then
}

func newOutstanding() *outstanding { return &outstanding{m: map[string]outstandingMsg{}} }

func (o *outstanding) add(ids []string, pts []int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, id := range ids {
		o.m[id] = outstandingMsg{publish: pts[i]}
	}
}

func (o *outstanding) done(ids []string, ackFailed bool, until time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		if ackFailed {
			m := o.m[id]
			m.until = until
			o.m[id] = m
		} else {
			delete(o.m, id)
		}
	}
}

func (o *outstanding) active() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]string, 0, len(o.m))
	for id, m := range o.m {
		if m.until.IsZero() {
			ids = append(ids, id)
		}
	}
	return ids
}

func (o *outstanding) oldest(now time.Time) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	oldest, ok := int64(math.MaxInt64), false
	for id, m := range o.m {
		if !m.until.IsZero() && now.After(m.until) {
			delete(o.m, id)
			continue
		}
		oldest, ok = min(oldest, m.publish), true
	}
	return oldest, ok
}

// flowControl bounds the messages and bytes a worker holds pulled and not
// yet acknowledged, over every stream of one subscription and run.
type flowControl struct {
	maxMsgs  int
	maxBytes int64

	mu    sync.Mutex
	msgs  int
	bytes int64
	freed chan struct{} // closed and replaced whenever something is released
}

// acquire reserves up to want messages, waiting (at most wait) while the
// worker is at either limit. It returns 0 when the wait ended first.
func (f *flowControl) acquire(ctx context.Context, want int, wait time.Duration) (int, error) {
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	for {
		f.mu.Lock()
		if f.msgs < f.maxMsgs && f.bytes < f.maxBytes {
			n := min(want, f.maxMsgs-f.msgs)
			f.msgs += n
			f.mu.Unlock()
			return n, nil
		}
		freed := f.freed
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-timer.C:
			return 0, nil
		case <-freed:
		}
	}
}

func (f *flowControl) addBytes(n int64) {
	f.mu.Lock()
	f.bytes += n
	f.mu.Unlock()
}

// release returns msgs messages and bytes bytes.
func (f *flowControl) release(msgs int, bytes int64) {
	if msgs == 0 && bytes == 0 {
		return
	}
	f.mu.Lock()
	f.msgs -= msgs
	f.bytes -= bytes
	close(f.freed)
	f.freed = make(chan struct{})
	f.mu.Unlock()
}

// outstandingNow reports what the worker holds (for tests and progress).
func (f *flowControl) outstandingNow() (int, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msgs, f.bytes
}

func isDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "DeadlineExceeded")
}

// acknowledge acks a batch's messages, retrying each chunk a few times with
// backoff; it returns an error only if some could not be acked (they are
// redelivered: duplicates, never loss).
func acknowledge(ctx context.Context, c *vkit.SubscriptionAdminClient, sub string, ids []string) error {
	for i := 0; i < len(ids); i += ackChunk {
		j := min(i+ackChunk, len(ids))
		err := retryAcks(ctx, 4, 100*time.Millisecond, func() error {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return c.Acknowledge(actx, &pubsubpb.AcknowledgeRequest{Subscription: sub, AckIds: ids[i:j]})
		})
		if err != nil {
			return fmt.Errorf("transforms: acknowledge %d messages on %s: %w", j-i, sub, err)
		}
	}
	return nil
}

// modifyDeadline sets the ack deadline of messages (0 hands them back for
// redelivery).
func modifyDeadline(ctx context.Context, c *vkit.SubscriptionAdminClient, sub string, ids []string, seconds int32) error {
	for i := 0; i < len(ids); i += ackChunk {
		j := min(i+ackChunk, len(ids))
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.ModifyAckDeadline(mctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: ids[i:j], AckDeadlineSeconds: seconds})
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// retryAcks calls f up to attempts times, with jittered exponential
// backoff from first between attempts, until it succeeds or ctx ends.
func retryAcks(ctx context.Context, attempts int, first time.Duration, f func() error) error {
	return retry.Do(ctx, retry.Policy{Attempts: attempts, Backoff: retry.Backoff{First: first}}, func(int) error { return f() })
}
