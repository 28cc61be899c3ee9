package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{First: 100 * time.Millisecond, Max: time.Second, NoJitter: true}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if d := b.Delay(i + 1); d != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", i+1, d, w*time.Millisecond)
		}
	}
	j := Backoff{First: 100 * time.Millisecond, Max: time.Second}
	for n := 1; n <= 8; n++ {
		full := b.Delay(n)
		for range 50 {
			if d := j.Delay(n); d < full/2 || d > full {
				t.Fatalf("jittered Delay(%d) = %v, outside [%v, %v]", n, d, full/2, full)
			}
		}
	}
	if d := (Backoff{First: time.Second}).Delay(5); d < 8*time.Second || d > 16*time.Second {
		t.Fatalf("uncapped Delay(5) = %v", d)
	}
}

func TestDoAttemptsAndRetryable(t *testing.T) {
	ctx := context.Background()
	fail := errors.New("transient")
	var waits []time.Duration
	p := Policy{Attempts: 3, Backoff: Backoff{First: time.Millisecond, NoJitter: true},
		Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}
	calls := 0
	if err := Do(ctx, p, func(n int) error { calls++; return fail }); !errors.Is(err, fail) || calls != 3 || len(waits) != 2 || waits[1] != 2*time.Millisecond {
		t.Fatalf("err %v after %d calls, waits %v", err, calls, waits)
	}
	calls = 0
	if err := Do(ctx, p, func(n int) error {
		calls++
		if n < 2 {
			return fail
		}
		return nil
	}); err != nil || calls != 2 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	perm := errors.New("permanent")
	p.Retryable = func(err error) bool { return !errors.Is(err, perm) }
	calls = 0
	if err := Do(ctx, p, func(int) error { calls++; return perm }); !errors.Is(err, perm) || calls != 1 {
		t.Fatalf("a refused error was retried: %v after %d calls", err, calls)
	}
	var retried []int
	p.Retryable, p.OnRetry = nil, func(n int, _ time.Duration, _ error) { retried = append(retried, n) }
	_ = Do(ctx, p, func(int) error { return fail })
	if len(retried) != 2 || retried[0] != 1 || retried[1] != 2 {
		t.Fatalf("OnRetry saw %v", retried)
	}
}

// A wait ends with the context: Do returns the context's error at once.
func TestDoHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	start := time.Now()
	err := Do(ctx, Policy{Backoff: Backoff{First: time.Hour}}, func(int) error { return errors.New("down") })
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on an ended context: %v", err)
	}
}
