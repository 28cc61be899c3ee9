package keyclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MultiOptions configure a MultiTransport. Zero values pick the defaults
// noted next to them.
type MultiOptions struct {
	// HealthInterval is how often every endpoint's readiness is probed
	// (RemoteTransport: GET /readyz). Default 1 s; negative: no probes
	// (endpoints are judged by their calls alone).
	HealthInterval time.Duration
	// HealthTimeout bounds one probe. Default 1 s.
	HealthTimeout time.Duration
	// Cooldown is the least time an endpoint that failed stays out of
	// preference: then a successful probe (without probes: the next call)
	// brings it back. Default 2 s.
	Cooldown time.Duration
	// HedgePercentile: a call not answered within this percentile of the
	// recent calls' latencies (until 20 calls were seen: within a quarter
	// of its deadline) is also sent to the next healthy endpoint, and the
	// first answer wins. Default 0.95; negative disables hedging.
	HedgePercentile float64
	// HedgeMinDelay is the shortest wait before a hedge. Default 5 ms.
	HedgeMinDelay time.Duration
	// HedgeRatio bounds the extra load of hedges: each call earns
	// HedgeRatio of a hedge, up to HedgeBurst saved. Defaults 0.05 and 10:
	// at most 5% more calls over time.
	HedgeRatio, HedgeBurst float64
}

func (o MultiOptions) withDefaults() MultiOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.HealthInterval, time.Second)
	def(&o.HealthTimeout, time.Second)
	def(&o.Cooldown, 2*time.Second)
	def(&o.HedgeMinDelay, 5*time.Millisecond)
	if o.HedgePercentile == 0 {
		o.HedgePercentile = 0.95
	}
	if o.HedgePercentile >= 1 {
		o.HedgePercentile = 0.99
	}
	if o.HedgeRatio <= 0 {
		o.HedgeRatio = 0.05
	}
	if o.HedgeBurst <= 0 {
		o.HedgeBurst = 10
	}
	return o
}

// Endpoint is one failure domain of a MultiTransport: in production a
// deployment group of the key service behind its own load balancer.
type Endpoint struct {
	// Name identifies it in stats and errors (e.g. "https://keys-a:7400").
	Name      string
	Transport Transport
	// Ready, if set, is the health probe: nil when the endpoint can serve.
	Ready func(ctx context.Context) error
}

// MultiTransport is a Transport over several endpoints, each its own
// failure domain. It sends each call to the first healthy endpoint in the
// order given (list the nearest group first), so every group's caches stay
// warm for the users it serves.
//
//   - Health: each endpoint is probed every HealthInterval; one that fails
//     a probe or a call (connection refused or reset, timeout, Unavailable,
//     ResourceExhausted) is out of preference for at least Cooldown, until
//     a probe passes again. When no endpoint is healthy, calls still go to
//     all of them in order.
//   - Failover: a call that fails transiently is sent at once to the next
//     endpoint not yet tried, within the same attempt.
//   - Hedging: a call not answered within the learned HedgePercentile of
//     recent latencies is also sent to the next healthy endpoint; the first
//     answer wins and the other call is cancelled. Hedges are paid from a token
//     bucket (HedgeRatio per call), so they add a bounded share of load.
//     Get-or-create is idempotent across groups that share a store, so a
//     hedged creation creates one keychain.
//   - A permanent answer (refused credentials, permission denied, invalid
//     argument, configuration, internal) is returned as it is: never
//     retried elsewhere, never hedged.
//
// Stats says how many calls went where. Close stops the probes.
type MultiTransport struct {
	eps    []*endpoint
	o      MultiOptions
	tokens *retryBudget // hedge tokens
	lat    latencyWindow

	failovers, hedges, hedgeWins, hedgesDenied atomic.Int64

	stop      chan struct{}
	probing   sync.WaitGroup
	closeOnce sync.Once
}

// Networked: every endpoint's calls wait on the network.
func (*MultiTransport) Networked() bool { return true }

type endpoint struct {
	Endpoint
	healthy   atomic.Bool
	downUntil atomic.Int64 // Unix ns before which a failed endpoint is not preferred
	lastErr   atomic.Pointer[string]

	calls, failures, hedges, wins atomic.Int64
}

var _ Transport = (*MultiTransport)(nil)

// NewMulti returns a MultiTransport over endpoints (at least one), in order
// of preference, and starts probing those with a Ready function.
func NewMulti(endpoints []Endpoint, o MultiOptions) (*MultiTransport, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: no key service endpoint", ErrConfig)
	}
	m := &MultiTransport{o: o.withDefaults(), stop: make(chan struct{})}
	m.tokens = newRetryBudget(m.o.HedgeBurst, m.o.HedgeRatio)
	probes := false
	for _, e := range endpoints {
		if e.Transport == nil {
			return nil, fmt.Errorf("keyclient: endpoint %q has no transport", e.Name)
		}
		ep := &endpoint{Endpoint: e}
		ep.healthy.Store(true)
		m.eps = append(m.eps, ep)
		probes = probes || e.Ready != nil
	}
	if probes && m.o.HealthInterval > 0 {
		m.probing.Add(1)
		go m.probeLoop()
	}
	return m, nil
}

// NewMultiRemote returns a MultiTransport over the key service at each of
// baseURLs (see ParseEndpoints), probing their /readyz.
func NewMultiRemote(baseURLs []string, secret string, httpClient *http.Client, o MultiOptions) (*MultiTransport, error) {
	if httpClient == nil {
		httpClient = DefaultHTTPClient()
	}
	var eps []Endpoint
	for _, u := range baseURLs {
		t, err := NewRemoteTransport(u, secret, httpClient)
		if err != nil {
			return nil, err
		}
		eps = append(eps, Endpoint{Name: endpointName(u), Transport: t, Ready: t.Ready})
	}
	return NewMulti(eps, o)
}

// endpointName is scheme://host[:port] of a base URL.
func endpointName(base string) string {
	if u, err := url.Parse(base); err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host
	}
	return base
}

// Close stops the health probes. It does not close the endpoints'
// transports.
func (m *MultiTransport) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	m.probing.Wait()
	return nil
}

// GetOrCreate implements Transport.
func (m *MultiTransport) GetOrCreate(ctx context.Context, scope string, userIDs, categories []string) ([]UserKeys, error) {
	return m.do(ctx, func(ctx context.Context, t Transport) ([]UserKeys, error) {
		return t.GetOrCreate(ctx, scope, userIDs, categories)
	})
}

// GetBySubject implements Transport.
func (m *MultiTransport) GetBySubject(ctx context.Context, scope string, subjects, categories []string) ([]UserKeys, error) {
	return m.do(ctx, func(ctx context.Context, t Transport) ([]UserKeys, error) {
		return t.GetBySubject(ctx, scope, subjects, categories)
	})
}

type multiResult struct {
	ep    *endpoint
	res   []UserKeys
	err   error
	took  time.Duration
	hedge bool
}

func (m *MultiTransport) do(ctx context.Context, call func(context.Context, Transport) ([]UserKeys, error)) ([]UserKeys, error) {
	order, healthy := m.order(time.Now())
	cctx, cancel := context.WithCancel(ctx)
	defer cancel() // the losers of a hedge, and anything still running
	results := make(chan multiResult, len(order))
	pending := make(map[*endpoint]bool, len(order))
	next := 0
	start := func(hedge bool) bool {
		if next >= len(order) {
			return false
		}
		ep := order[next]
		next++
		pending[ep] = true
		ep.calls.Add(1)
		if hedge {
			ep.hedges.Add(1)
		}
		go func() {
			t0 := time.Now()
			res, err := call(cctx, ep.Transport)
			results <- multiResult{ep: ep, res: res, err: err, took: time.Since(t0), hedge: hedge}
		}()
		return true
	}
	m.tokens.success() // every call earns its share of a hedge
	start(false)
	var hedgeC <-chan time.Time
	if healthy > 1 && m.o.HedgePercentile > 0 {
		if d, ok := m.hedgeDelay(ctx); ok {
			t := time.NewTimer(d)
			defer t.Stop()
			hedgeC = t.C
		}
	}
	var lastErr error
	for {
		select {
		case r := <-results:
			delete(pending, r.ep)
			if r.err == nil {
				m.lat.add(r.took)
				m.markUp(r.ep)
				if r.hedge {
					r.ep.wins.Add(1)
					m.hedgeWins.Add(1)
				}
				return r.res, nil
			}
			if !IsTransient(r.err) {
				return nil, fmt.Errorf("%s: %w", r.ep.Name, r.err)
			}
			m.markDown(r.ep, r.err)
			lastErr = fmt.Errorf("%s: %w", r.ep.Name, r.err)
			if ctx.Err() == nil && start(false) {
				m.failovers.Add(1)
				continue
			}
			if len(pending) == 0 {
				return nil, lastErr
			}
		case <-hedgeC:
			hedgeC = nil
			if next >= healthy {
				break // hedges go to healthy endpoints only
			}
			if !m.tokens.spend() {
				m.hedgesDenied.Add(1)
				break
			}
			start(true)
			m.hedges.Add(1)
		case <-ctx.Done():
			// The caller's deadline passed: whoever still works on the call
			// was too slow for it.
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				for ep := range pending {
					m.markDown(ep, context.DeadlineExceeded)
				}
			}
			if lastErr != nil {
				return nil, Unavailable(fmt.Errorf("%w (then %w)", lastErr, ctx.Err()))
			}
			return nil, Unavailable(ctx.Err())
		}
	}
}

// order is the endpoints to try: the healthy ones in preference order (the
// first healthy of them), then the others (a last resort for failover:
// health may be stale).
func (m *MultiTransport) order(now time.Time) (order []*endpoint, healthy int) {
	order = make([]*endpoint, 0, len(m.eps))
	for _, ep := range m.eps {
		if m.isHealthy(ep, now) {
			order = append(order, ep)
		}
	}
	healthy = len(order)
	for _, ep := range m.eps {
		if !slices.Contains(order, ep) {
			order = append(order, ep)
		}
	}
	return order, healthy
}

// hedgeDelay is how long a call waits before it is hedged: the learned
// percentile of recent latencies (at least HedgeMinDelay); until enough
// calls were seen, a quarter of the time left before the call's deadline.
func (m *MultiTransport) hedgeDelay(ctx context.Context) (time.Duration, bool) {
	if d, ok := m.lat.quantile(m.o.HedgePercentile); ok {
		return max(d, m.o.HedgeMinDelay), true
	}
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl)/4, m.o.HedgeMinDelay), true
	}
	return 0, false
}

func (m *MultiTransport) isHealthy(ep *endpoint, now time.Time) bool {
	if ep.healthy.Load() {
		return true
	}
	// Without probes, a failed endpoint is tried again once its cooldown
	// has passed (and marked healthy by its first answer).
	return (ep.Ready == nil || m.o.HealthInterval < 0) && now.UnixNano() >= ep.downUntil.Load()
}

func (m *MultiTransport) markDown(ep *endpoint, err error) {
	ep.failures.Add(1)
	ep.healthy.Store(false)
	ep.downUntil.Store(time.Now().Add(m.o.Cooldown).UnixNano())
	msg := err.Error()
	ep.lastErr.Store(&msg)
}

func (m *MultiTransport) markUp(ep *endpoint) {
	if !ep.healthy.Load() {
		ep.healthy.Store(true)
	}
}

func (m *MultiTransport) probeLoop() {
	defer m.probing.Done()
	tick := time.NewTicker(m.o.HealthInterval)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for _, ep := range m.eps {
			if ep.Ready == nil {
				continue
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), m.o.HealthTimeout)
				err := ep.Ready(ctx)
				cancel()
				switch {
				case err != nil:
					ep.healthy.Store(false)
					ep.downUntil.Store(max(ep.downUntil.Load(), time.Now().Add(m.o.Cooldown).UnixNano()))
					msg := err.Error()
					ep.lastErr.Store(&msg)
				case time.Now().UnixNano() >= ep.downUntil.Load():
					ep.healthy.Store(true)
				}
			})
		}
		wg.Wait()
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
	}
}

// EndpointStats are one endpoint's counters since the transport was made.
type EndpointStats struct {
	Endpoint  string
	Healthy   bool
	Calls     int64 // calls sent here: first tries, failovers and hedges
	Failures  int64 // calls that failed transiently here (down, timeout, overloaded)
	Hedges    int64 // of Calls, hedges
	HedgeWins int64 // of Hedges, those that answered first
	// LastError is the last transient failure's message ("" if none).
	LastError string
}

// MultiStats say how many calls went where.
type MultiStats struct {
	Endpoints []EndpointStats
	// Failovers are calls sent on to another endpoint after a transient
	// failure; Hedges are calls also sent to another endpoint because the
	// first was slow (HedgeWins of them answered first); HedgesDenied
	// were not sent for lack of hedge tokens.
	Failovers, Hedges, HedgeWins, HedgesDenied int64
	// HedgeDelay is the current hedge delay (0 until enough calls were
	// seen, or when hedging is off).
	HedgeDelay time.Duration
}

// Stats returns the transport's counters.
func (m *MultiTransport) Stats() MultiStats {
	s := MultiStats{Failovers: m.failovers.Load(), Hedges: m.hedges.Load(), HedgeWins: m.hedgeWins.Load(), HedgesDenied: m.hedgesDenied.Load()}
	if m.o.HedgePercentile > 0 {
		if d, ok := m.lat.quantile(m.o.HedgePercentile); ok {
			s.HedgeDelay = max(d, m.o.HedgeMinDelay)
		}
	}
	now := time.Now()
	for _, ep := range m.eps {
		es := EndpointStats{Endpoint: ep.Name, Healthy: m.isHealthy(ep, now), Calls: ep.calls.Load(), Failures: ep.failures.Load(),
			Hedges: ep.hedges.Load(), HedgeWins: ep.wins.Load()}
		if p := ep.lastErr.Load(); p != nil {
			es.LastError = *p
		}
		s.Endpoints = append(s.Endpoints, es)
	}
	return s
}

// String is one line: per endpoint its calls (failed, hedges, hedges that
// won), then the failovers and hedges of the whole transport.
func (s MultiStats) String() string {
	var b strings.Builder
	for i, e := range s.Endpoints {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d calls (%d failed, %d hedges, %d won)", e.Endpoint, e.Calls, e.Failures, e.Hedges, e.HedgeWins)
		if !e.Healthy {
			b.WriteString(" [down]")
		}
	}
	fmt.Fprintf(&b, "; %d failovers, %d hedges (%d won, %d denied by the hedge budget)", s.Failovers, s.Hedges, s.HedgeWins, s.HedgesDenied)
	return b.String()
}

// EndpointStats returns, when the client's transport spreads calls over
// several endpoints (a MultiTransport), how many calls went where.
func (c *Client) EndpointStats() (MultiStats, bool) {
	m, ok := c.t.(*MultiTransport)
	if !ok {
		return MultiStats{}, false
	}
	return m.Stats(), true
}

// latencyWindow keeps the latencies of the last latencyWindowSize
// successful calls and their quantiles (recomputed every 64 calls).
type latencyWindow struct {
	mu     sync.Mutex
	ring   [latencyWindowSize]time.Duration
	n      int // filled
	next   int
	sorted []time.Duration // a sorted copy, refreshed every 64 adds
	adds   int
}

const (
	latencyWindowSize = 512
	minLatencySamples = 20
)

func (l *latencyWindow) add(d time.Duration) {
	l.mu.Lock()
	l.ring[l.next] = d
	l.next = (l.next + 1) % latencyWindowSize
	l.n = min(l.n+1, latencyWindowSize)
	l.adds++
	if l.adds%64 == 0 || l.n == minLatencySamples {
		l.sorted = append(l.sorted[:0], l.ring[:l.n]...)
		slices.Sort(l.sorted)
	}
	l.mu.Unlock()
}

// quantile is the q-quantile of the window; false until enough calls.
func (l *latencyWindow) quantile(q float64) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.sorted) < minLatencySamples {
		return 0, false
	}
	return l.sorted[min(len(l.sorted)-1, int(float64(len(l.sorted))*q))], true
}
