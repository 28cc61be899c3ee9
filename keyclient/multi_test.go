package keyclient

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// group is one endpoint of a test: a view of a shared Fake (one store
// behind every group) with its own faults.
type group struct {
	f     *Fake
	calls atomic.Int64
	mu    sync.Mutex
	err   error                // every call fails with it
	delay func() time.Duration // every call waits this long first
	ready error                // what its probe answers
}

func (g *group) set(err error, delay func() time.Duration) {
	g.mu.Lock()
	g.err, g.delay = err, delay
	g.mu.Unlock()
}

func (g *group) before(ctx context.Context) error {
	g.calls.Add(1)
	g.mu.Lock()
	err, delay := g.err, g.delay
	g.mu.Unlock()
	if delay != nil {
		t := time.NewTimer(delay())
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return Unavailable(ctx.Err())
		}
	}
	return err
}

func (g *group) GetOrCreate(ctx context.Context, scope string, ids, cats []string) ([]UserKeys, error) {
	if err := g.before(ctx); err != nil {
		return nil, err
	}
	return g.f.GetOrCreate(ctx, scope, ids, cats)
}

func (g *group) GetBySubject(ctx context.Context, scope string, subs, cats []string) ([]UserKeys, error) {
	if err := g.before(ctx); err != nil {
		return nil, err
	}
	return g.f.GetBySubject(ctx, scope, subs, cats)
}

func (g *group) probe(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ready
}

func newGroups(t *testing.T, n int, probes bool, o MultiOptions) (*MultiTransport, []*group) {
	t.Helper()
	f := NewFake()
	var gs []*group
	var eps []Endpoint
	for i := range n {
		g := &group{f: f}
		gs = append(gs, g)
		e := Endpoint{Name: fmt.Sprintf("group-%c", 'a'+i), Transport: g}
		if probes {
			e.Ready = g.probe
		}
		eps = append(eps, e)
	}
	m, err := NewMulti(eps, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, gs
}

func getKeys(t *testing.T, m *MultiTransport, user string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := m.GetOrCreate(ctx, "test", []string{user}, cats)
	if err == nil && (len(res) != 1 || len(res[0].Keys) != len(cats)) {
		t.Fatalf("bad answer %+v", res)
	}
	return err
}

// Calls go to the first healthy endpoint; a transient failure (a group
// down, overloaded, timing out) fails over to the next one within the same
// call, and the failed group stays out of preference for the cooldown.
func TestMultiFailover(t *testing.T) {
	for name, fault := range map[string]struct {
		err   error
		delay func() time.Duration
	}{
		"down":       {err: Unavailable(errors.New("connection refused"))},
		"overloaded": {err: Unavailable(errors.New("resource_exhausted: server overloaded"))},
		"timeout":    {delay: func() time.Duration { return time.Hour }},
	} {
		t.Run(name, func(t *testing.T) {
			m, gs := newGroups(t, 2, false, MultiOptions{Cooldown: time.Hour, HedgePercentile: -1})
			if err := getKeys(t, m, "u0"); err != nil || gs[0].calls.Load() != 1 || gs[1].calls.Load() != 0 {
				t.Fatalf("healthy: err %v, calls %d/%d", err, gs[0].calls.Load(), gs[1].calls.Load())
			}
			gs[0].set(fault.err, fault.delay)
			if fault.delay != nil {
				// A timeout needs the caller's deadline: the next call fails
				// over, this one is lost to the slow group.
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				_, err := m.GetOrCreate(ctx, "test", []string{"u1"}, cats)
				cancel()
				if !IsTransient(err) {
					t.Fatalf("timed-out call: %v", err)
				}
			} else if err := getKeys(t, m, "u1"); err != nil {
				t.Fatalf("failover: %v", err)
			}
			for i := range 5 {
				if err := getKeys(t, m, fmt.Sprint("v", i)); err != nil {
					t.Fatal(err)
				}
			}
			st := m.Stats()
			if gs[0].calls.Load() != 2 || st.Endpoints[0].Failures != 1 || st.Endpoints[0].Healthy {
				t.Fatalf("group a: %d calls, stats %+v", gs[0].calls.Load(), st.Endpoints[0])
			}
			wantB := int64(6) // the failed-over call and the 5 after it
			if fault.delay != nil {
				wantB = 5 // the timed-out call was not sent on
			}
			if gs[1].calls.Load() != wantB {
				t.Fatalf("group b: %d calls, want %d (%s)", gs[1].calls.Load(), wantB, st)
			}
			if fault.delay == nil && st.Failovers != 1 {
				t.Fatalf("failovers %d", st.Failovers)
			}
		})
	}
}

// A permanent refusal is the answer: never sent to another endpoint, never
// hedged, and the endpoint stays healthy. (Hedging is on, with a delay far
// above the refusal's: a hedge sent before a refusal arrives may win the
// race, and on a busy machine a 1 ms hedge delay would let it.)
func TestMultiPermanentErrorIsNotRetriedOrHedged(t *testing.T) {
	for _, perm := range []error{ErrUnauthenticated, ErrPermissionDenied, ErrInvalidArgument, ErrConfig, ErrInternal} {
		m, gs := newGroups(t, 2, false, MultiOptions{HedgeMinDelay: 500 * time.Millisecond})
		for i := range minLatencySamples {
			if err := getKeys(t, m, fmt.Sprint("warm", i)); err != nil {
				t.Fatal(err)
			}
		}
		gs[0].set(perm, nil)
		err := getKeys(t, m, "refused")
		if !errors.Is(err, perm) || IsTransient(err) || !strings.Contains(err.Error(), "group-a") {
			t.Fatalf("%v: err %v", perm, err)
		}
		st := m.Stats()
		if gs[1].calls.Load() != 0 || st.Failovers != 0 || !st.Endpoints[0].Healthy {
			t.Fatalf("%v: group b called %d times, %s", perm, gs[1].calls.Load(), st)
		}
	}
}

// A call slower than the learned percentile is hedged to the next
// endpoint; the first answer wins. Hedges are bounded by the hedge budget.
func TestMultiHedging(t *testing.T) {
	m, gs := newGroups(t, 2, false, MultiOptions{HedgeMinDelay: time.Millisecond, HedgeRatio: 0.1, HedgeBurst: 3})
	gs[0].set(nil, func() time.Duration { return 2 * time.Millisecond })
	for i := range 50 {
		if err := getKeys(t, m, fmt.Sprint("warm", i)); err != nil {
			t.Fatal(err)
		}
	}
	if d := m.Stats().HedgeDelay; d < time.Millisecond || d > 50*time.Millisecond {
		t.Fatalf("learned hedge delay %v", d)
	}
	// Group a stalls on every call; b answers at once.
	gs[0].set(nil, func() time.Duration { return 150 * time.Millisecond })
	before := m.Stats()
	start := time.Now()
	const n = 20
	for i := range n {
		if err := getKeys(t, m, fmt.Sprint("slow", i)); err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(start)
	st := m.Stats()
	hedges, wins := st.Hedges-before.Hedges, st.HedgeWins-before.HedgeWins
	// The budget: at most 3 saved (fewer when warming on a busy machine
	// hedged some of its 2 ms calls) plus 0.1 per call: at least one hedge,
	// never more than the budget allows.
	if hedges < 1 || float64(hedges) > 3+0.1*float64(n)+1 {
		t.Fatalf("%d hedges over %d slow calls (budget 3 + 0.1/call): %s", hedges, n, st)
	}
	// A hedge sent after the stalled call's learned delay wins; once the
	// window has learned enough slow calls, the delay nears the stall.
	if wins == 0 || st.Endpoints[1].HedgeWins != st.HedgeWins {
		t.Fatalf("%d hedges, %d won: %s", hedges, wins, st)
	}
	if st.HedgesDenied == 0 {
		t.Fatalf("no hedge was denied by the budget: %s", st)
	}
	t.Logf("%d slow calls in %v: %s", n, el.Round(time.Millisecond), st)
}

// Probes take a group out of preference and bring it back once it passes
// again (after the cooldown).
func TestMultiHealthProbes(t *testing.T) {
	m, gs := newGroups(t, 2, true, MultiOptions{HealthInterval: 10 * time.Millisecond, Cooldown: 50 * time.Millisecond, HedgePercentile: -1})
	gs[0].mu.Lock()
	gs[0].ready = Unavailable(errors.New("store not ready"))
	gs[0].mu.Unlock()
	waitFor(t, func() bool { return !m.Stats().Endpoints[0].Healthy })
	if err := getKeys(t, m, "u"); err != nil || gs[0].calls.Load() != 0 || gs[1].calls.Load() != 1 {
		t.Fatalf("while a is unready: err %v, calls %d/%d", err, gs[0].calls.Load(), gs[1].calls.Load())
	}
	gs[0].mu.Lock()
	gs[0].ready = nil
	gs[0].mu.Unlock()
	waitFor(t, func() bool { return m.Stats().Endpoints[0].Healthy })
	if err := getKeys(t, m, "v"); err != nil || gs[0].calls.Load() != 1 {
		t.Fatalf("after a is back: err %v, calls %d/%d", err, gs[0].calls.Load(), gs[1].calls.Load())
	}
	// Every endpoint unhealthy: calls still go out, in order.
	for _, g := range gs {
		g.mu.Lock()
		g.ready = Unavailable(errors.New("down"))
		g.mu.Unlock()
	}
	waitFor(t, func() bool { st := m.Stats(); return !st.Endpoints[0].Healthy && !st.Endpoints[1].Healthy })
	if err := getKeys(t, m, "w"); err != nil || gs[0].calls.Load() != 2 {
		t.Fatalf("all unhealthy: err %v, calls %d/%d", err, gs[0].calls.Load(), gs[1].calls.Load())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
	}
}

// Behind a Client, an outage of the preferred group costs no retry: the
// failover happens inside the attempt.
func TestClientOverMultiFailsOverWithoutRetry(t *testing.T) {
	m, gs := newGroups(t, 2, false, MultiOptions{HedgePercentile: -1})
	c, err := New(m, Options{Scope: "test", BatchWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	gs[0].set(Unavailable(errors.New("connection refused")), nil)
	for i := range 20 {
		if _, err := c.ForEncrypt(context.Background(), []string{fmt.Sprint("u", i)}, cats); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.Stats(); st.Retries != 0 || st.RPCs != 20 {
		t.Fatalf("client stats %+v", st)
	}
	es, ok := c.EndpointStats()
	if !ok || es.Endpoints[0].Calls != 1 || es.Endpoints[1].Calls != 20 {
		t.Fatalf("endpoint stats %v %s", ok, es)
	}
}

func TestParseEndpoints(t *testing.T) {
	for _, good := range []string{"http://127.0.0.1:7400", "https://keys-a:7400,https://keys-b:7400", "http://h", "https://gw.example.com/keys", "http://[::1]:7400/", "http://a:1, http://b:2"} {
		if _, err := ParseEndpoints(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for bad, want := range map[string]string{
		"http://127.0.0.1:1:2/":     "does not parse",
		"http://127.0.0.1:99999":    "port",
		"http://127.0.0.1:0":        "port",
		"ftp://h:1":                 "scheme",
		"http://":                   "no host",
		"http://:7400":              "no host",
		"http://a:1,":               "empty",
		"http://a:1,,http://b:2":    "empty",
		"http://a:1,local:/x":       "scheme",
		"http://a:1,http://a:1":     "twice",
		"http://user:pw@h:1":        "no credentials",
		"http://h:1/?x=1":           "query",
		"http://h:1,htp://other:2":  "scheme",
		"https://keys a:7400":       "does not parse",
		"http://h:1#frag":           "fragment",
		"https://keys-a:7400;b:740": "port",
	} {
		_, err := ParseEndpoints(bad)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want ErrConfig saying %q", bad, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("%q: the error shows the password: %v", bad, err)
		}
	}
}

func TestOpenRejectsBadURLsAtOnce(t *testing.T) {
	for _, bad := range []string{"http://127.0.0.1:1:2/", "htp://keys:7400", "keys:7400", "http://a:1,http://b:x"} {
		if _, err := Open(context.Background(), bad, Options{Scope: "s"}); !errors.Is(err, ErrConfig) {
			t.Errorf("Open(%q) = %v, want ErrConfig", bad, err)
		}
	}
	c, err := Open(context.Background(), "http://127.0.0.1:1,http://127.0.0.1:2", Options{Scope: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.EndpointStats(); !ok {
		t.Fatal("two endpoints did not make a MultiTransport")
	}
}
