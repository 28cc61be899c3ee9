package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
)

// Source yields the messages to publish.
type Source interface {
	// Next returns the next message (its id and publish time are
	// replaced by Pub/Sub's); ok is false once there are no more.
	Next(now time.Time) (m record.Message, ok bool, err error)
}

// Synthetic is an endless source of synthetic events.
func Synthetic(s *synth.Stream) Source { return synthetic{s} }

type synthetic struct{ s *synth.Stream }

func (s synthetic) Next(now time.Time) (record.Message, bool, error) { return s.s.Next(now), true, nil }

// Messages sends msgs once, in order.
func Messages(msgs []record.Message) Source { return &list{msgs: msgs} }

type list struct {
	msgs []record.Message
	i    int
}

func (l *list) Next(time.Time) (record.Message, bool, error) {
	if l.i >= len(l.msgs) {
		return record.Message{}, false, nil
	}
	l.i++
	return l.msgs[l.i-1], true, nil
}

// File reads replay lines (record.ParseLine) from r, once. A line that is
// not a message fails the run with its line number (never its content).
func File(r io.Reader) Source {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &file{sc: sc}
}

type file struct {
	sc   *bufio.Scanner
	line int
	p    record.LineParser
}

func (f *file) Next(time.Time) (record.Message, bool, error) {
	for f.sc.Scan() {
		f.line++
		if len(f.sc.Bytes()) == 0 {
			continue
		}
		m, err := f.p.Parse(f.sc.Bytes())
		if err != nil {
			return record.Message{}, false, fmt.Errorf("loadgen: line %d: %w", f.line, err)
		}
		m.Data = append([]byte(nil), m.Data...) // the scanner reuses its buffer
		return m, true, nil
	}
	return record.Message{}, false, f.sc.Err()
}

// Config paces and shapes a run.
type Config struct {
	// Rate is messages per second (0: as fast as the publisher takes
	// them).
	Rate float64
	// Duration ends the run (0: when the source ends).
	Duration time.Duration
	// Duplicates and Malformed are shares of the slots, in [0, 1) together.
	Duplicates, Malformed float64
	Seed                  uint64
	// Progress, when set, gets a line every ProgressEvery (default 5s).
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Summary is what a run sent.
type Summary struct {
	// Events, Duplicates and Malformed count the messages handed to the
	// publisher: events (valid as far as the source goes), extra copies
	// of the previous message, messages with a broken payload.
	Events, Duplicates, Malformed int64
	// Sent were published (Pub/Sub returned an id); Errors failed.
	Sent, Errors int64
	FirstError   error
	Elapsed      time.Duration
}

// Messages is every message handed to the publisher.
func (s Summary) Messages() int64 { return s.Events + s.Duplicates + s.Malformed }

// Rate is the messages published per second.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Sent) / s.Elapsed.Seconds()
}

func (s Summary) String() string {
	line := fmt.Sprintf("published %d messages in %s (%.0f/s): %d events, %d duplicates, %d malformed; %d errors",
		s.Sent, s.Elapsed.Round(time.Millisecond), s.Rate(), s.Events, s.Duplicates, s.Malformed, s.Errors)
	if s.FirstError != nil {
		line += " (first: " + s.FirstError.Error() + ")"
	}
	return line
}

// Check validates cfg (what Run would refuse).
func (c Config) Check() error {
	switch {
	case c.Rate < 0:
		return fmt.Errorf("loadgen: rate %g < 0", c.Rate)
	case c.Duration < 0:
		return fmt.Errorf("loadgen: duration %s < 0", c.Duration)
	case c.Duplicates < 0 || c.Malformed < 0 || c.Duplicates+c.Malformed >= 1:
		return fmt.Errorf("loadgen: duplicates %g and malformed %g must be >= 0 and together below 1", c.Duplicates, c.Malformed)
	}
	return nil
}

// Run publishes src to pub as cfg says, then flushes and waits for every
// result. It does not stop pub.
func Run(ctx context.Context, pub *pubsub.Publisher, src Source, cfg Config) (Summary, error) {
	var sum Summary
	if err := cfg.Check(); err != nil {
		return sum, err
	}
	every := cfg.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	r := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x10ad))
	start := time.Now()
	var sent, failed atomic.Int64
	var mu sync.Mutex
	results := make(chan *pubsub.PublishResult, 4096)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for res := range results {
				if _, err := res.Get(context.WithoutCancel(ctx)); err != nil {
					failed.Add(1)
					mu.Lock()
					if sum.FirstError == nil {
						sum.FirstError = err
					}
					mu.Unlock()
					continue
				}
				sent.Add(1)
			}
		})
	}
	stopProgress := progress(cfg.Progress, every, start, &sent, &failed)

	var runErr error
	var last record.Message
	have := false
	for i := int64(0); ; i++ {
		if cfg.Rate > 0 {
			// Message i is due at start + i/rate: sleep only when ahead.
			due := start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
			if cfg.Duration > 0 && !due.Before(start.Add(cfg.Duration)) {
				break
			}
			if wait := time.Until(due); wait > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		}
		now := time.Now()
		if ctx.Err() != nil {
			runErr = ctx.Err()
			break
		}
		if cfg.Duration > 0 && now.Sub(start) >= cfg.Duration {
			break
		}
		var m record.Message
		x := r.Float64()
		if have && x < cfg.Duplicates {
			m = last
			sum.Duplicates++
		} else {
			var ok bool
			var err error
			if m, ok, err = src.Next(now); err != nil || !ok {
				runErr = err
				break
			}
			if x < cfg.Duplicates+cfg.Malformed {
				m.Data = m.Data[:len(m.Data)/2]
				sum.Malformed++
			} else {
				last, have = m, true
				sum.Events++
			}
		}
		results <- pub.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes})
	}
	pub.Flush()
	close(results)
	wg.Wait()
	stopProgress()
	sum.Sent, sum.Errors, sum.Elapsed = sent.Load(), failed.Load(), time.Since(start)
	return sum, runErr
}

// progress prints a line every interval until stop is called.
func progress(w io.Writer, every time.Duration, start time.Time, sent, failed *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var last int64
		lastAt := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				n := sent.Load()
				fmt.Fprintf(w, "publish %s: %d sent (%.0f/s), %d errors\n", now.Sub(start).Round(time.Second), n,
					float64(n-last)/now.Sub(lastAt).Seconds(), failed.Load())
				last, lastAt = n, now
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
