package dataset

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/layout"
)

var testHour = layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)}

func TestLease(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.Starting(time.Date(2026, 11, 23, 7, 5, 0, 0, time.UTC), 1)
	a, err := AcquireLease(ctx, b, testHour, "run-a", time.Minute, clk)
	if err != nil {
		t.Fatal(err)
	}
	// A live lease is not taken.
	_, err = AcquireLease(ctx, b, testHour, "run-b", time.Minute, clk)
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrLeaseHeld) || held.RunID != "run-a" {
		t.Fatalf("second acquire of a live lease: %v", err)
	}
	if err := a.Check(ctx); err != nil {
		t.Fatalf("holder's check: %v", err)
	}

	// Expired (its holder paused past the TTL): taken over, and the former
	// holder's check fails from then on.
	later := clock.Starting(clk.Now().Add(2*time.Minute), 1)
	bl, err := AcquireLease(ctx, b, testHour, "run-b", time.Minute, later)
	if err != nil {
		t.Fatalf("takeover of an expired lease: %v", err)
	}
	if bl.Doc().TakenOverFrom != "run-a" {
		t.Errorf("takeover does not name the former holder: %+v", bl.Doc())
	}
	if err := a.Check(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("former holder's check after a takeover: %v", err)
	}
	// Its release does not remove the new holder's lease.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bl.Check(ctx); err != nil {
		t.Fatalf("new holder's check after the former one released: %v", err)
	}

	// A holder whose own lease expired fails its check even if no one took
	// it over (it must not publish late).
	stale := &Lease{b: b, hour: bl.hour, name: bl.name, runID: bl.runID, ttl: bl.ttl, clk: clock.Starting(later.Now().Add(5*time.Minute), 1), doc: bl.Doc(), gen: bl.gen}
	if err := stale.Check(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("check of an expired lease: %v", err)
	}

	// Released: the next run takes it at once.
	if err := bl.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := AcquireLease(ctx, b, testHour, "run-c", time.Minute, later)
	if err != nil {
		t.Fatalf("acquire after a release: %v", err)
	}
	if c.Doc().TakenOverFrom != "" {
		t.Errorf("a released lease was taken over: %+v", c.Doc())
	}
}

// TestLeaseRace: of runs racing for a free lease, exactly one gets it.
func TestLeaseRace(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var won []string
	var wg sync.WaitGroup
	for _, run := range []string{"r1", "r2", "r3", "r4", "r5", "r6"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := AcquireLease(ctx, b, testHour, run, time.Minute, clock.System)
			switch {
			case err == nil:
				mu.Lock()
				won = append(won, run)
				mu.Unlock()
			case !errors.Is(err, ErrLeaseHeld):
				t.Errorf("%s: %v", run, err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("%d runs hold the lease: %v", len(won), won)
	}
}

func TestKeepAlive(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.Starting(time.Date(2026, 11, 23, 7, 5, 0, 0, time.UTC), 60) // a minute per second
	l, err := AcquireLease(ctx, b, testHour, "run-a", 2*time.Minute, clk)
	if err != nil {
		t.Fatal(err)
	}
	stop := l.KeepAlive(ctx)
	time.Sleep(4 * time.Second) // four minutes of clock time: twice the TTL
	stop()
	if err := l.Check(ctx); err != nil {
		t.Fatalf("a kept-alive lease expired: %v", err)
	}
	if _, err := AcquireLease(ctx, b, testHour, "run-b", 2*time.Minute, clk); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a kept-alive lease was taken: %v", err)
	}
}
