package transforms

import (
	"context"
	"fmt"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/retry"
)

// A batch's anonymization: retries of key-service errors, and slices
// anonymized side by side.

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
		release, err := w.cores.hold(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
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
