package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/layout"
)

// DefaultLeaseTTL is how long a publication lease lasts without renewal.
// A holder renews it every TTL/4 while it works.
const DefaultLeaseTTL = 2 * time.Minute

// Errors of leases.
var (
	// ErrLeaseHeld: another run holds a live lease on the hour.
	ErrLeaseHeld = errors.New("dataset: another run is publishing this hour")
	// ErrLeaseLost: the lease expired and another run took it over (or it
	// was removed); the former holder must not publish.
	ErrLeaseLost = errors.New("dataset: publication lease lost")
)

// LeaseDoc is the content of a lease object.
type LeaseDoc struct {
	RunID    string    `json:"run_id"`
	Holder   string    `json:"holder"` // host and process id, for people
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	Expires  time.Time `json:"expires"`
	// TakenOverFrom is the run whose expired lease this one replaced.
	TakenOverFrom string `json:"taken_over_from,omitempty"`
}

// HeldError says who holds a live lease.
type HeldError struct {
	Hour    layout.Hour
	RunID   string
	Holder  string
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s: run %s (%s) is publishing it (lease until %s)", e.Hour, e.RunID, e.Holder, e.Expires.UTC().Format(time.RFC3339))
}

func (e *HeldError) Unwrap() error { return ErrLeaseHeld }

// Lease is a held publication lease.
type Lease struct {
	b     blob.Bucket
	hour  layout.Hour
	name  string
	runID string
	ttl   time.Duration
	clk   clock.Clock

	mu   sync.Mutex
	doc  LeaseDoc
	gen  int64
	lost error
}

// AcquireLease takes the publication lease of h for runID: it creates the
// lease, or takes over an expired one. A live lease of another run fails
// with a *HeldError (errors.Is ErrLeaseHeld). ttl 0 means DefaultLeaseTTL.
func AcquireLease(ctx context.Context, b blob.Bucket, h layout.Hour, runID string, ttl time.Duration, clk clock.Clock) (*Lease, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	host, _ := os.Hostname()
	l := &Lease{b: b, hour: h, name: layout.LeaseName(h.Type, h.Version, h.Hour), runID: runID, ttl: ttl, clk: clk}
	for attempt := 0; attempt < 5; attempt++ {
		now := clk.Now()
		doc := LeaseDoc{RunID: runID, Holder: fmt.Sprintf("%s pid %d", host, os.Getpid()), Acquired: now, Renewed: now, Expires: now.Add(ttl)}
		data, gen, err := b.ReadVersion(ctx, l.name)
		switch {
		case errors.Is(err, blob.ErrNotExist):
			gen = 0
		case err != nil:
			return nil, err
		default:
			var cur LeaseDoc
			if err := json.Unmarshal(data, &cur); err != nil {
				return nil, fmt.Errorf("dataset: lease %s: %w", l.name, err)
			}
			if cur.RunID == runID {
				return nil, fmt.Errorf("dataset: lease %s is already held by this run", l.name)
			}
			if now.Before(cur.Expires) {
				return nil, &HeldError{Hour: h, RunID: cur.RunID, Holder: cur.Holder, Expires: cur.Expires}
			}
			doc.TakenOverFrom = cur.RunID
		}
		newGen, err := l.write(ctx, doc, gen)
		if errors.Is(err, blob.ErrPrecondition) {
			// Someone else changed it meanwhile, or a retried write of
			// ours whose first attempt took effect: look again.
			if g, ok := l.written(ctx, doc); ok {
				l.doc, l.gen = doc, g
				return l, nil
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		l.doc, l.gen = doc, newGen
		return l, nil
	}
	return nil, fmt.Errorf("dataset: lease %s keeps changing", l.name)
}

func (l *Lease) write(ctx context.Context, doc LeaseDoc, gen int64) (int64, error) {
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return 0, err
	}
	return l.b.WriteVersion(ctx, l.name, append(data, '\n'), gen)
}

// written reports whether the lease object holds doc now (a write whose
// response was lost and whose retry then failed its precondition), and at
// which generation.
func (l *Lease) written(ctx context.Context, doc LeaseDoc) (int64, bool) {
	data, gen, err := l.b.ReadVersion(ctx, l.name)
	if err != nil {
		return 0, false
	}
	var cur LeaseDoc
	if json.Unmarshal(data, &cur) != nil {
		return 0, false
	}
	return gen, cur.RunID == doc.RunID && cur.Renewed.Equal(doc.Renewed) && cur.Expires.Equal(doc.Expires)
}

// Doc returns the lease as last written.
func (l *Lease) Doc() LeaseDoc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.doc
}

// Check re-checks ownership and renews the lease: it fails with
// ErrLeaseLost when the lease expired (even if no one took it over yet) or
// changed hands. Call it right before every write that publishes.
func (l *Lease) Check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	now := l.clk.Now()
	if !now.Before(l.doc.Expires) {
		l.lost = fmt.Errorf("%w: %s expired at %s", ErrLeaseLost, l.name, l.doc.Expires.UTC().Format(time.RFC3339))
		return l.lost
	}
	doc := l.doc
	doc.Renewed, doc.Expires = now, now.Add(l.ttl)
	gen, err := l.write(ctx, doc, l.gen)
	if errors.Is(err, blob.ErrPrecondition) {
		g, ok := l.written(ctx, doc)
		if !ok {
			l.lost = fmt.Errorf("%w: %s changed hands", ErrLeaseLost, l.name)
			return l.lost
		}
		gen, err = g, nil
	}
	if err != nil {
		return err
	}
	l.doc, l.gen = doc, gen
	return nil
}

// KeepAlive renews the lease every TTL/4 until stop is called or ctx ends;
// a renewal that finds the lease lost stops it (the next Check reports it).
func (l *Lease) KeepAlive(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if l.clk.Sleep(ctx, l.ttl/4) != nil {
				return
			}
			if err := l.Check(ctx); errors.Is(err, ErrLeaseLost) {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// Release gives the lease up (if still held): the next run need not wait
// for it to expire.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return nil
	}
	l.lost = fmt.Errorf("%w: released", ErrLeaseLost)
	err := l.b.DeleteVersion(ctx, l.name, l.gen)
	if errors.Is(err, blob.ErrPrecondition) {
		return nil // taken over: not ours to delete
	}
	return err
}
