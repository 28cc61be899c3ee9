// Package clock is the time source of lockstream's pipelines and jobs: the
// system clock, or, for tests, a clock that starts at a chosen instant and
// may run faster than real time. A Clock is a plain value (it is
// serialized with a pipeline's DoFns), never a global: a test gives the
// same Clock to the pipeline's configuration and to the fake it drives
// (pstest's SetTimeNowFunc takes Clock.Now).
//
// # Behavior
//
// The zero Clock is the system clock. A Clock with Start set reads Start at
// the real instant Origin and then advances Rate times as fast as real
// time (Rate 0 means 1). Durations the pipeline waits for (lease renewals,
// heartbeats, timeouts) are clock durations: Real converts one into the
// real time to sleep, so everything stays consistent at any rate.
package clock

import (
	"context"
	"fmt"
	"time"
)

// Clock tells the time. The zero value is the system clock.
type Clock struct {
	// OriginUnixMillis is the real time (Unix ms) at which the clock read
	// StartUnixMillis. Both 0: the system clock.
	OriginUnixMillis int64
	StartUnixMillis  int64
	// Rate is how many clock seconds pass per real second (0 = 1).
	Rate float64
}

// System is the system clock.
var System = Clock{}

// Starting returns a clock that reads start now and runs rate times as fast
// as real time (rate <= 0 means 1).
func Starting(start time.Time, rate float64) Clock {
	if rate <= 0 {
		rate = 1
	}
	return Clock{OriginUnixMillis: time.Now().UnixMilli(), StartUnixMillis: start.UnixMilli(), Rate: rate}
}

// IsSystem reports whether c is the system clock.
func (c Clock) IsSystem() bool { return c.OriginUnixMillis == 0 && c.StartUnixMillis == 0 }

func (c Clock) rate() float64 {
	if c.Rate <= 0 {
		return 1
	}
	return c.Rate
}

// Now is the clock's current time (UTC).
func (c Clock) Now() time.Time {
	now := time.Now()
	if c.IsSystem() {
		return now.UTC()
	}
	elapsed := float64(now.UnixNano() - c.OriginUnixMillis*int64(time.Millisecond))
	return time.UnixMilli(c.StartUnixMillis).Add(time.Duration(elapsed * c.rate())).UTC()
}

// Since is the clock time elapsed since t.
func (c Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Real converts a clock duration into real time.
func (c Clock) Real(d time.Duration) time.Duration {
	if c.IsSystem() || c.rate() == 1 {
		return d
	}
	return time.Duration(float64(d) / c.rate())
}

// Sleep waits for a clock duration or until ctx ends (then it returns
// ctx.Err()).
func (c Clock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(c.Real(d))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NewTicker returns a ticker that ticks every clock duration d.
func (c Clock) NewTicker(d time.Duration) *time.Ticker {
	r := c.Real(d)
	if r <= 0 {
		r = time.Millisecond
	}
	return time.NewTicker(r)
}

// String describes the clock.
func (c Clock) String() string {
	if c.IsSystem() {
		return "system clock"
	}
	return fmt.Sprintf("clock starting at %s, %gx real time", time.UnixMilli(c.StartUnixMillis).UTC().Format(time.RFC3339), c.rate())
}
