// Package retry is lockstream's one retry loop and backoff: exponential
// delays with "equal jitter" (uniform in [d/2, d]), capped, and waits that
// end with the context. Callers decide what is worth retrying; budgets that
// bound retries across calls (keyclient's token bucket, the write stage's
// retry time) stay with them.
package retry

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/lockstream/lockstream/clock"
)

// Backoff is a schedule of delays: First before the first retry, doubling
// up to Max (0: no cap), jittered unless NoJitter.
type Backoff struct {
	First, Max time.Duration
	NoJitter   bool
}

// Delay is the wait before retry n (1, 2, …).
func (b Backoff) Delay(n int) time.Duration {
	d := b.First
	for i := 1; i < n && (b.Max <= 0 || d < b.Max); i++ {
		d *= 2
	}
	if b.Max > 0 {
		d = min(d, b.Max)
	}
	if b.NoJitter || d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// Sleep waits for d or until ctx ends (then it returns ctx's error): the
// system clock's Sleep.
func Sleep(ctx context.Context, d time.Duration) error { return clock.System.Sleep(ctx, d) }

// Policy says how Do retries.
type Policy struct {
	// Attempts bounds the calls (the first included); 0 or less: until the
	// context ends or Retryable refuses.
	Attempts int
	Backoff  Backoff
	// Retryable reports whether an error is worth another attempt; nil:
	// every error is.
	Retryable func(error) bool
	// OnRetry, if set, is told of each retry before its wait.
	OnRetry func(attempt int, wait time.Duration, err error)
	// Sleep replaces Sleep (tests).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Do calls f (with the attempt number, from 1) until it succeeds, returns
// an error Retryable refuses, the attempts are spent (then f's last error
// is returned) or ctx ends while waiting (then ctx's error).
func Do(ctx context.Context, p Policy, f func(attempt int) error) error {
	sleep := p.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	for n := 1; ; n++ {
		err := f(n)
		if err == nil {
			return nil
		}
		if (p.Attempts > 0 && n >= p.Attempts) || (p.Retryable != nil && !p.Retryable(err)) {
			return err
		}
		wait := p.Backoff.Delay(n)
		if p.OnRetry != nil {
			p.OnRetry(n, wait, err)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return serr
		}
	}
}
