package keyclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/retry"
)

// Options configure a Client. The zero value of every field but Scope picks
// the default noted next to it.
type Options struct {
	// Scope is the key-derivation scope the calling service was granted.
	// Required.
	Scope string

	// CacheSize is the number of users and subjects whose keys are kept
	// (each with the categories fetched for it); default 250,000; negative
	// disables the cache.
	CacheSize int
	// TTL bounds how long a cached key is used: after a delete, revoke or
	// rotation a running client keeps using what it has for at most TTL.
	// Default 1 minute.
	TTL time.Duration
	// NegativeTTL is how long "deleted" and "unknown subject" answers are
	// cached. Default 10 seconds.
	NegativeTTL time.Duration

	// BatchWindow is how long a lookup of fewer than BatchAlone ids waits
	// for others to share its RPC; default 1 ms; negative sends at once
	// (lookups that are concurrent still share an RPC already pending).
	BatchWindow time.Duration
	// BatchAlone is the fewest ids a lookup asks for (every set of a
	// ForEncryptSets together) to be a batch of its own: the ids it cannot
	// answer from the cache are sent at once, with whatever other lookups
	// of the same categories have pending, instead of waiting out
	// BatchWindow (a batch of events would otherwise wait it out for the
	// few users it has not met yet). Default 64; negative: every lookup
	// waits out the window.
	BatchAlone int
	// MaxBatch is the most ids per RPC (keep it at or under the server's
	// limit). Default 1000.
	MaxBatch int

	// Deterministic, when not nil, is the categories whose keys seal or
	// open deterministic (AES-SIV) fields: only their keys get an AES-SIV
	// key derived as they are fetched (fieldcrypt.DeriveKey; the others
	// fieldcrypt.DeriveGCMKey, 6 of HKDF's 11 SHA-256 blocks). nil derives
	// it for every category; empty, for none. A key of another category
	// asked for a deterministic field still works: fieldcrypt.Cache derives
	// its AES-SIV key then, once per key it keeps.
	Deterministic []string

	// AttemptTimeout is the deadline of one RPC. Default 2 s.
	AttemptTimeout time.Duration
	// CallTimeout bounds one batch including its retries. Default 10 s.
	CallTimeout time.Duration
	// MaxAttempts per batch, first try included. Default 4.
	MaxAttempts int
	// RetryBase and RetryMax shape the jittered exponential backoff.
	// Defaults 25 ms and 1 s.
	RetryBase, RetryMax time.Duration
	// RetryBudget is the most retries the client may burst (tokens), and
	// RetryRatio the tokens each successful RPC earns back. Defaults 10 and
	// 0.1: in a long outage retries add at most 10% to the load.
	RetryBudget, RetryRatio float64

	// Secret is the service secret sent as "Authorization: Bearer" (remote
	// only).
	Secret string
	// HTTPClient is the HTTP client of the remote transport; default one
	// with keep-alive connections sized for concurrent batches.
	HTTPClient *http.Client

	// Now is the clock of the cache (tests). Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.CacheSize == 0 {
		o.CacheSize = 250_000
	}
	def(&o.TTL, time.Minute)
	def(&o.NegativeTTL, 10*time.Second)
	def(&o.BatchWindow, time.Millisecond)
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.BatchAlone == 0 {
		o.BatchAlone = 64
	}
	def(&o.AttemptTimeout, 2*time.Second)
	def(&o.CallTimeout, 10*time.Second)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 4
	}
	def(&o.RetryBase, 25*time.Millisecond)
	def(&o.RetryMax, time.Second)
	if o.RetryBudget == 0 {
		o.RetryBudget = 10
	}
	if o.RetryRatio == 0 {
		o.RetryRatio = 0.1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Stats are counters since the client was made.
type Stats struct {
	Lookups       int64 // ids asked for
	CacheHits     int64 // ids answered from the cache (negative entries included)
	Coalesced     int64 // ids that joined a lookup already pending or in flight
	RPCs          int64 // transport calls, retries included
	Retries       int64 // retried transport calls
	RetriesDenied int64 // retries refused by the retry budget
	Derived       int64 // keys whose per-algorithm keys were derived (fieldcrypt.DeriveKey), one per key fetched
	CacheEntries  int   // users and subjects cached
}

// Client puts caching, batching, singleflight, deadlines and retries in
// front of any Transport. It is safe for concurrent use; share one per
// process.
type Client struct {
	t      Transport
	closer io.Closer
	o      Options
	cache  *keyCache
	budget *retryBudget

	mu       sync.Mutex
	pending  map[batchKey]*batch
	inflight map[flightKey]*call

	lookups, hits, coalesced, rpcs, retries, denied, derived atomic.Int64

	// siv is Options.Deterministic as a set (nil: every category).
	siv map[string]bool
}

type batchKey struct {
	kind entryKind
	cats string // sorted, NUL-joined
}

type flightKey struct {
	batchKey
	id string
}

type batch struct {
	key   batchKey
	cats  []string
	ids   []string
	calls []*call
	timer *time.Timer
}

type call struct {
	done chan struct{}
	res  UserKeys
	err  error
}

// New builds a Client over a transport. closer (may be nil) is closed by
// Client.Close.
func New(t Transport, opts Options) (*Client, error) {
	return newClient(t, nil, opts)
}

func newClient(t Transport, closer io.Closer, opts Options) (*Client, error) {
	if t == nil {
		return nil, errors.New("keyclient: New needs a transport")
	}
	if opts.Scope == "" {
		return nil, errors.New("keyclient: Options.Scope is required")
	}
	o := opts.withDefaults()
	c := &Client{
		t: t, closer: closer, o: o,
		cache:    newKeyCache(o.CacheSize, o.Now),
		budget:   newRetryBudget(o.RetryBudget, o.RetryRatio),
		pending:  make(map[batchKey]*batch),
		inflight: make(map[flightKey]*call),
	}
	if o.Deterministic != nil {
		c.siv = make(map[string]bool, len(o.Deterministic))
		for _, cat := range o.Deterministic {
			c.siv[cat] = true
		}
	}
	return c, nil
}

// ForEncrypt implements Keys.
func (c *Client) ForEncrypt(ctx context.Context, userIDs, categories []string) ([]UserKeys, error) {
	return c.get(ctx, nil, kindUser, userIDs, categories)
}

// ForDecrypt implements Keys.
func (c *Client) ForDecrypt(ctx context.Context, subjects, categories []string) ([]UserKeys, error) {
	return c.get(ctx, nil, kindSubject, subjects, categories)
}

// ForEncryptInto is ForEncrypt answering into room a holds, which the
// caller reuses from call to call: what a call returns is valid until the
// next call with the same a, and must not be kept past it.
func (c *Client) ForEncryptInto(ctx context.Context, a *Answers, userIDs, categories []string) ([]UserKeys, error) {
	return c.get(ctx, a, kindUser, userIDs, categories)
}

// A Set is one part of a ForEncryptSets call: users asked for the same
// categories, answered into room the caller keeps (Answers, as
// ForEncryptInto's; each set its own). A user the cache cannot answer is
// fetched with the categories of Also as well, which are cached for the
// lookups that ask for them.
type Set struct {
	Answers    *Answers
	UserIDs    []string
	Categories []string
	Also       []string
}

// Networked reports whether the key service's calls wait on a network
// (RemoteTransport, MultiTransport, a Fake with a latency) rather than
// being CPU work of this process (an in-process service): a caller may
// let go of its core while a lookup of such a client waits.
func (c *Client) Networked() bool {
	n, ok := c.t.(networked)
	return ok && n.Networked()
}

// ForEncryptSets answers several sets of users in one lookup, each set as
// ForEncryptInto would, in the order of sets. It is for a caller with a
// batch to seal: an anonymizer asks each user for the categories of its
// own events (the batch's union being Also, so that the subsets make one
// fetch per user, not one per subset), and its dead letters' owners for
// their payload key. The users that the cache cannot answer go to the
// service in one batch per set of categories fetched (MaxBatch ids per
// RPC), sent at once when the sets hold BatchAlone users or more. Answers
// hold the categories asked only.
func (c *Client) ForEncryptSets(ctx context.Context, sets []Set) ([][]UserKeys, error) {
	ls := make([]lookupSet, len(sets))
	for i, s := range sets {
		if s.Answers == nil {
			s.Answers = &Answers{}
		}
		ls[i] = lookupSet{a: s.Answers, ids: s.UserIDs, cats: s.Categories, also: s.Also}
	}
	if err := c.getSets(ctx, kindUser, ls); err != nil {
		return nil, err
	}
	out := make([][]UserKeys, len(sets))
	for i, s := range ls {
		if len(s.ids) > 0 {
			out[i] = s.a.out
		}
	}
	return out, nil
}

// ForDecryptInto is ForDecrypt answering into a, as ForEncryptInto.
func (c *Client) ForDecryptInto(ctx context.Context, a *Answers, subjects, categories []string) ([]UserKeys, error) {
	return c.get(ctx, a, kindSubject, subjects, categories)
}

// Answers is room for the answers of one call (ForEncryptInto,
// ForDecryptInto) that a caller keeps and reuses, so that a call per
// batch of events does not allocate its answers anew (~400 bytes per
// user). Its zero value is ready; it is not safe for concurrent use.
type Answers struct {
	out  []UserKeys
	keys []fieldcrypt.CategoryKey // room for the answers' keys (keyCache.answer)
	held []slotKey                // the key bytes those keys point into
	// The cache keys of a call's ids (in idBuf), and which were answered.
	idBuf    []byte
	ids      [][]byte
	answered []bool
	// The subjects of a call's answers that are not the ids asked
	// (keyCache.answer), copied from their entries, and which answers
	// they name: made one string when the call's entries are read, not a
	// string per answer.
	subjects []byte
	unnamed  []unnamed
}

// unnamed is an answer whose subject is a.subjects[off:off+n].
type unnamed struct{ i, off, n int }

// reset starts a call's answers: the last call's are no longer used.
func (a *Answers) reset() {
	a.keys, a.held = a.keys[:0], a.held[:0]
	a.subjects, a.unnamed = a.subjects[:0], a.unnamed[:0]
}

// subjectOf returns the subject of e, the entry answering the call's i-th
// id: id itself when it is a subject's entry, else "" for now, the
// subject's bytes copied into a's room to be named with the call's other
// subjects once its entries are read (nameSubjects).
func (a *Answers) subjectOf(e entry, kind entryKind, id string, i int) string {
	sub := e.subject()
	if kind == kindSubject && string(sub) == id {
		return id
	}
	a.unnamed = append(a.unnamed, unnamed{i: i, off: len(a.subjects), n: len(sub)})
	a.subjects = append(a.subjects, sub...)
	return ""
}

// nameSubjects gives the answers whose subjects were copied (unnamed)
// their subjects, and their keys too: substrings of one string.
func (a *Answers) nameSubjects() {
	if len(a.unnamed) == 0 {
		return
	}
	all := string(a.subjects)
	for _, u := range a.unnamed {
		r := &a.out[u.i]
		r.Subject = all[u.off : u.off+u.n]
		for k := range r.Keys {
			r.Keys[k].Subject = r.Subject
		}
	}
	a.subjects, a.unnamed = a.subjects[:0], a.unnamed[:0]
}

// carve returns the next n elements of an arena of the answers (a.keys,
// a.held), capped at n. When the arena runs out a bigger one is made, the
// answers already given keeping theirs: the next call starts in the
// bigger one.
func carve[T any](arena *[]T, n int) []T {
	s := *arena
	if cap(s)-len(s) < n {
		s = make([]T, 0, max(2*cap(s), n, 64))
	}
	*arena = s[:len(s)+n]
	return s[len(s) : len(s)+n : len(s)+n]
}

// grow returns s with length n and zero elements, reusing its array when
// it has room.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// Forget drops what the cache holds about a user id or subject, e.g. right
// after this process deleted or revoked it.
func (c *Client) Forget(idOrSubject string) { c.cache.forget(idOrSubject) }

// Purge drops everything the cache holds, e.g. when a pipeline run that
// filled it has ended and the process goes on with other work; a transport
// with a cache of its own (an in-process key service, keyclient/local)
// drops that too.
func (c *Client) Purge() {
	c.cache.purge()
	if p, ok := c.t.(interface{ Purge() }); ok {
		p.Purge()
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Lookups: c.lookups.Load(), CacheHits: c.hits.Load(), Coalesced: c.coalesced.Load(),
		RPCs: c.rpcs.Load(), Retries: c.retries.Load(), RetriesDenied: c.denied.Load(),
		Derived: c.derived.Load(), CacheEntries: c.cache.len(),
	}
}

// Close releases the transport (if it was opened by Open).
func (c *Client) Close() error {
	if c.closer != nil {
		return c.closer.Close()
	}
	return nil
}

// get answers ids for categories; into a when a is not nil (Answers), else
// into new room.
func (c *Client) get(ctx context.Context, a *Answers, kind entryKind, ids, categories []string) ([]UserKeys, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if a == nil {
		a = &Answers{}
	}
	sets := [1]lookupSet{{a: a, ids: ids, cats: categories}}
	if err := c.getSets(ctx, kind, sets[:]); err != nil {
		return nil, err
	}
	return a.out, nil
}

// lookupSet is one part of a lookup: ids asked for the same categories,
// answered into a.out; what is fetched is fetched for also too.
type lookupSet struct {
	a               *Answers
	ids, cats, also []string
	// Set by getSets: what its misses are fetched for (cats and also,
	// sorted), and the pending batch they join.
	fetch []string
	key   batchKey
}

// getSets answers each set's ids for its categories into its Answers (a
// set's own: sets share none). The ids the cache cannot answer join the
// pending batch of their set's categories and also. A lookup of at least
// BatchAlone ids, every set counted, sends the batches it joined at once;
// a smaller one waits out BatchWindow for others to join.
func (c *Client) getSets(ctx context.Context, kind entryKind, sets []lookupSet) error {
	n := 0
	for j := range sets {
		s := &sets[j]
		if len(s.ids) == 0 {
			continue
		}
		if len(s.cats) == 0 {
			return fmt.Errorf("%w: no categories requested", ErrInvalidArgument)
		}
		n += len(s.ids)
		s.fetch = append(slices.Clone(s.cats), s.also...)
		slices.Sort(s.fetch)
		s.fetch = slices.Compact(s.fetch)
		s.key = batchKey{kind: kind, cats: strings.Join(s.fetch, "\x00")}
	}
	if n == 0 {
		return nil
	}

	c.lookups.Add(int64(n))
	type wait struct {
		set, i int
		c      *call
	}
	var waits []wait
	misses := make([][]int, len(sets))
	for j := range sets {
		s := &sets[j]
		s.a.out = grow(s.a.out, len(s.ids))
		if len(s.ids) == 0 {
			continue
		}
		if q, ok := c.cache.newQuery(s.cats); ok {
			misses[j] = c.cache.lookup(kind, s.ids, q, s.a)
			c.hits.Add(int64(len(s.ids) - len(misses[j])))
		} else {
			for i := range s.ids {
				misses[j] = append(misses[j], i)
			}
		}
	}
	var full []*batch
	c.mu.Lock()
	for j, ms := range misses {
		bk := sets[j].key
		for _, i := range ms {
			id := sets[j].ids[i]
			fk := flightKey{bk, id}
			if cl, ok := c.inflight[fk]; ok {
				c.coalesced.Add(1)
				waits = append(waits, wait{j, i, cl})
				continue
			}
			cl := &call{done: make(chan struct{})}
			c.inflight[fk] = cl
			waits = append(waits, wait{j, i, cl})
			b := c.pending[bk]
			if b == nil {
				b = &batch{key: bk, cats: sets[j].fetch}
				c.pending[bk] = b
				if c.o.BatchWindow > 0 {
					b.timer = time.AfterFunc(c.o.BatchWindow, func() { c.flushPending(b) })
				}
			}
			b.ids = append(b.ids, id)
			b.calls = append(b.calls, cl)
			if len(b.ids) >= c.o.MaxBatch {
				delete(c.pending, bk)
				full = append(full, b)
			}
		}
	}
	if c.o.BatchWindow < 0 || c.o.BatchAlone > 0 && n >= c.o.BatchAlone {
		// Nothing to wait for: the lookup is a batch of its own (or
		// there is no window). Whatever else is pending for the same
		// categories goes with it, sooner than its window.
		for j, ms := range misses {
			if b := c.pending[sets[j].key]; b != nil && len(ms) > 0 {
				delete(c.pending, sets[j].key)
				full = append(full, b)
			}
		}
	}
	c.mu.Unlock()
	for _, b := range full {
		if b.timer != nil {
			b.timer.Stop()
		}
		go c.flush(b)
	}
	for _, w := range waits {
		select {
		case <-w.c.done:
		case <-ctx.Done():
			return Unavailable(fmt.Errorf("waiting for keys: %w", ctx.Err()))
		}
		if w.c.err != nil {
			return w.c.err
		}
		r := w.c.res
		out := &sets[w.set].a.out[w.i]
		*out = UserKeys{Subject: r.Subject, Err: r.Err}
		if r.Err == nil {
			// The call may have fetched more categories than this caller
			// asked for (same set, other order): pick in the caller's order.
			pick(out, r, sets[w.set].cats)
		}
	}
	if kind == kindUser {
		for _, s := range sets {
			for i := range s.a.out {
				s.a.out[i].UserID = s.ids[i]
			}
		}
	}
	return nil
}

// pick copies into dst the keys and revocations of r for categories, in that
// order.
func pick(dst *UserKeys, r UserKeys, categories []string) {
	for _, cat := range categories {
		if slices.Contains(r.Revoked, cat) {
			dst.Revoked = append(dst.Revoked, cat)
			continue
		}
		for _, k := range r.Keys {
			if k.Category == cat {
				dst.Keys = append(dst.Keys, k)
			}
		}
	}
}

func (c *Client) store(kind entryKind, id string, cats []string, r UserKeys) {
	c.cache.store(kind, id, cats, r, c.o.TTL, c.o.NegativeTTL)
}

// deriveKeys gives each key its per-algorithm keys (fieldcrypt.DeriveKey,
// or DeriveGCMKey for a category not in Options.Deterministic), once, as
// it arrives: the cache keeps them beside the secret and the callers
// waiting on the call seal with them, neither deriving again. A key that
// cannot be derived is left as it is: the caller's cipher reports it.
func (c *Client) deriveKeys(keys []fieldcrypt.CategoryKey) (derived int64) {
	if len(keys) == 0 {
		return 0
	}
	ds := make([]fieldcrypt.Derived, len(keys))
	for i := range keys {
		derive := fieldcrypt.DeriveKey
		if c.siv != nil && !c.siv[keys[i].Category] {
			derive = fieldcrypt.DeriveGCMKey
		}
		if d, err := derive(keys[i]); err == nil {
			ds[i] = d
			keys[i] = keys[i].WithDerived(&ds[i])
			derived++
		}
	}
	return derived
}

// flushPending sends b if it is still pending (its window ran out).
func (c *Client) flushPending(b *batch) {
	c.mu.Lock()
	if c.pending[b.key] != b {
		c.mu.Unlock()
		return
	}
	delete(c.pending, b.key)
	c.mu.Unlock()
	c.flush(b)
}

// flush makes the batch's RPC (with retries) and completes its calls. The
// RPC has its own deadline, independent of any one waiter's context, since
// it serves them all.
func (c *Client) flush(b *batch) {
	ctx, cancel := context.WithTimeout(context.Background(), c.o.CallTimeout)
	defer cancel()
	res, err := c.roundTrip(ctx, b.key.kind, b.ids, b.cats)
	if err == nil {
		for i, id := range b.ids {
			c.derived.Add(c.deriveKeys(res[i].Keys))
			c.store(b.key.kind, id, b.cats, res[i])
		}
	}
	c.mu.Lock()
	for _, id := range b.ids {
		delete(c.inflight, flightKey{b.key, id})
	}
	c.mu.Unlock()
	for i, cl := range b.calls {
		if err != nil {
			cl.err = err
		} else {
			cl.res = res[i]
		}
		close(cl.done)
	}
}

func (c *Client) roundTrip(ctx context.Context, kind entryKind, ids, cats []string) ([]UserKeys, error) {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.o.AttemptTimeout)
		var res []UserKeys
		var err error
		c.rpcs.Add(1)
		if kind == kindUser {
			res, err = c.t.GetOrCreate(actx, c.o.Scope, ids, cats)
		} else {
			res, err = c.t.GetBySubject(actx, c.o.Scope, ids, cats)
		}
		cancel()
		if err == nil {
			if len(res) != len(ids) {
				return nil, fmt.Errorf("%w: %d answers for %d ids", ErrInternal, len(res), len(ids))
			}
			c.budget.success()
			return res, nil
		}
		if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrUnavailable) {
			err = Unavailable(err)
		}
		if !IsTransient(err) || attempt >= c.o.MaxAttempts {
			return nil, err
		}
		if !c.budget.spend() {
			c.denied.Add(1)
			return nil, fmt.Errorf("%w (retry budget exhausted)", err)
		}
		c.retries.Add(1)
		if err := retry.Sleep(ctx, retry.Backoff{First: c.o.RetryBase, Max: c.o.RetryMax}.Delay(attempt)); err != nil {
			return nil, Unavailable(fmt.Errorf("%w (after %d attempts)", err, attempt))
		}
	}
}
