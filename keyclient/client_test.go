package keyclient

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
)

var cats = []string{"contact", "location"}

func newTestClient(t *testing.T, f *Fake, mod func(*Options)) *Client {
	t.Helper()
	o := Options{Scope: "test", BatchWindow: 5 * time.Millisecond, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	c, err := New(f, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBatchingCoalescesConcurrentLookups(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.BatchWindow = 20 * time.Millisecond })
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			res, err := c.ForEncrypt(context.Background(), []string{fmt.Sprintf("u%d", i)}, cats)
			if err != nil {
				errs <- err
				return
			}
			if len(res) != 1 || len(res[0].Keys) != 2 || res[0].Subject == "" || res[0].UserID != fmt.Sprintf("u%d", i) {
				errs <- fmt.Errorf("bad result %+v", res)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.Calls(); got > 5 {
		t.Fatalf("%d concurrent single lookups took %d RPCs, want <= 5", n, got)
	}
	if f.IDs() != n {
		t.Fatalf("ids sent = %d, want %d", f.IDs(), n)
	}
}

func TestMaxBatchSplits(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.MaxBatch = 100 })
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i)
	}
	res, err := c.ForEncrypt(context.Background(), ids, cats)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(ids) {
		t.Fatalf("%d results", len(res))
	}
	if f.Calls() != 10 {
		t.Fatalf("RPCs = %d, want 10", f.Calls())
	}
}

func TestCacheHitAndOrder(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	a, err := c.ForEncrypt(ctx, []string{"alice", "bob"}, cats)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.ForEncrypt(ctx, []string{"bob", "alice"}, []string{"location", "contact"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Calls() != 1 {
		t.Fatalf("RPCs = %d, want 1 (second call from cache)", f.Calls())
	}
	if b[0].Subject != a[1].Subject || b[1].Subject != a[0].Subject || b[0].UserID != "bob" {
		t.Fatal("cached answers are not in request order")
	}
	if b[0].Keys[0].Category != "location" || !b[0].Keys[0].Secret.Equal(a[1].Keys[1].Secret) {
		t.Fatal("cached keys differ or are not in category order")
	}
	if st := c.Stats(); st.CacheHits != 2 || st.Lookups != 4 {
		t.Fatalf("stats %+v", st)
	}
	// TTL expiry: a fresh lookup goes to the service again.
	now := time.Now()
	c2 := newTestClient(t, f, func(o *Options) { o.TTL = time.Minute; o.Now = func() time.Time { return now } })
	if _, err := c2.ForEncrypt(ctx, []string{"alice"}, cats); err != nil {
		t.Fatal(err)
	}
	before := f.Calls()
	now = now.Add(2 * time.Minute)
	if _, err := c2.ForEncrypt(ctx, []string{"alice"}, cats); err != nil {
		t.Fatal(err)
	}
	if f.Calls() != before+1 {
		t.Fatal("expired entry was served from the cache")
	}
}

func TestSingleflight(t *testing.T) {
	f := NewFake()
	f.SetLatency(30 * time.Millisecond)
	c := newTestClient(t, f, func(o *Options) { o.BatchWindow = -1 })
	var wg sync.WaitGroup
	subjects := make([]string, 50)
	for i := range subjects {
		wg.Go(func() {
			res, err := c.ForEncrypt(context.Background(), []string{"same-user"}, cats)
			if err == nil {
				subjects[i] = res[0].Subject
			}
		})
	}
	wg.Wait()
	if f.Calls() != 1 {
		t.Fatalf("50 concurrent lookups of one user took %d RPCs, want 1", f.Calls())
	}
	for _, s := range subjects {
		if s == "" || s != subjects[0] {
			t.Fatal("callers got different answers")
		}
	}
	if c.Stats().Coalesced != 49 {
		t.Fatalf("coalesced = %d", c.Stats().Coalesced)
	}
}

func TestNegativeCache(t *testing.T) {
	f := NewFake()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := newTestClient(t, f, func(o *Options) { o.Now = clock; o.NegativeTTL = 10 * time.Second })
	ctx := context.Background()
	f.DeleteUser("gone")
	for range 3 {
		res, err := c.ForEncrypt(ctx, []string{"gone"}, cats)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, ErrUserDeleted) || len(res[0].Keys) != 0 {
			t.Fatalf("deleted user: %+v", res[0])
		}
	}
	if f.Calls() != 1 {
		t.Fatalf("RPCs = %d, want 1 (negative cache)", f.Calls())
	}
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	if _, err := c.ForEncrypt(ctx, []string{"gone"}, cats); err != nil {
		t.Fatal(err)
	}
	if f.Calls() != 2 {
		t.Fatal("negative entry outlived NegativeTTL")
	}
	// Unknown subjects are cached negatively too.
	res, err := c.ForDecrypt(ctx, []string{"s_nope", "s_nope"}, cats)
	if err != nil || !errors.Is(res[0].Err, ErrUnknownSubject) || !errors.Is(res[1].Err, ErrUnknownSubject) {
		t.Fatalf("unknown subject: %v %+v", err, res)
	}
}

func TestDecryptVersionsAndRevoke(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.CacheSize = -1 })
	ctx := context.Background()
	enc, err := c.ForEncrypt(ctx, []string{"alice"}, cats)
	if err != nil {
		t.Fatal(err)
	}
	f.Rotate("contact")
	f.Revoke("alice", "location")
	dec, err := c.ForDecrypt(ctx, []string{enc[0].Subject}, cats)
	if err != nil {
		t.Fatal(err)
	}
	d := dec[0]
	if d.Err != nil || len(d.Keys) != 2 || d.Keys[0].Version != 1 || d.Keys[1].Version != 2 || !d.Keys[0].Secret.Equal(enc[0].Keys[0].Secret) {
		t.Fatalf("decrypt keys: %+v", d)
	}
	if len(d.Revoked) != 1 || d.Revoked[0] != "location" {
		t.Fatalf("revoked = %v", d.Revoked)
	}
	if d.UserID != "" {
		t.Fatal("ForDecrypt must not know user ids")
	}
}

func TestRetryOnUnavailable(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, nil)
	f.FailNext(2, Unavailable(errors.New("injected")))
	if _, err := c.ForEncrypt(context.Background(), []string{"u"}, cats); err != nil {
		t.Fatalf("want success after 2 retries: %v", err)
	}
	if f.Calls() != 3 || c.Stats().Retries != 2 {
		t.Fatalf("calls %d stats %+v", f.Calls(), c.Stats())
	}
}

func TestRetryBudget(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.RetryBudget = 2; o.RetryRatio = 0.001; o.MaxAttempts = 10 })
	f.FailNext(100, Unavailable(errors.New("down")))
	_, err := c.ForEncrypt(context.Background(), []string{"u"}, cats)
	if !errors.Is(err, ErrUnavailable) || !IsTransient(err) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if f.Calls() != 3 { // first try + 2 budgeted retries
		t.Fatalf("calls = %d, want 3", f.Calls())
	}
	// The budget is empty now: the next batch gets no retry at all.
	_, err = c.ForEncrypt(context.Background(), []string{"v"}, cats)
	if !errors.Is(err, ErrUnavailable) || f.Calls() != 4 {
		t.Fatalf("err %v calls %d", err, f.Calls())
	}
	if c.Stats().RetriesDenied != 2 {
		t.Fatalf("stats %+v", c.Stats())
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	for _, perm := range []error{ErrPermissionDenied, ErrUnauthenticated, ErrInvalidArgument} {
		f := NewFake()
		c := newTestClient(t, f, nil)
		f.FailNext(1, perm)
		_, err := c.ForEncrypt(context.Background(), []string{"u"}, cats)
		if !errors.Is(err, perm) || IsTransient(err) || f.Calls() != 1 {
			t.Fatalf("%v: err %v calls %d", perm, err, f.Calls())
		}
	}
}

func TestDeadlines(t *testing.T) {
	f := NewFake()
	f.SetLatency(time.Second)
	c := newTestClient(t, f, func(o *Options) { o.AttemptTimeout = 30 * time.Millisecond; o.MaxAttempts = 2 })
	start := time.Now()
	_, err := c.ForEncrypt(context.Background(), []string{"u"}, cats)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Fatalf("two 30ms attempts took %v", el)
	}
	if f.Calls() != 2 {
		t.Fatalf("calls = %d", f.Calls())
	}
	// The caller's own deadline is honoured even while a batch is in flight.
	c2 := newTestClient(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c2.ForEncrypt(ctx, []string{"w"}, cats)
	if !IsTransient(err) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestFakeHookSeesOps(t *testing.T) {
	f := NewFake("contact")
	var ops atomic.Int64
	f.SetHook(func(_ context.Context, op string, ids []string) error { ops.Add(1); return nil })
	if _, err := f.ForEncrypt(context.Background(), []string{"a"}, []string{"contact"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ForEncrypt(context.Background(), []string{"a"}, []string{"nope"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown category: %v", err)
	}
	if ops.Load() != 2 || f.Calls() != 2 {
		t.Fatal("hook/counter")
	}
}

// TestAnswersInto: answers into reused room are the answers ForEncrypt
// and ForDecrypt give, call after call (hits, misses, revoked and deleted
// users mixed, fewer ids than the call before), and a warm call into room
// it has used before allocates less than a tenth of what a call into new
// room does.
func TestAnswersInto(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	users := make([]string, 300)
	for i := range users {
		users[i] = fmt.Sprintf("into-user-%03d", i)
	}
	f.Revoke(users[7], "location")
	var a Answers
	same := func(got, want []UserKeys) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d answers, want %d", len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.UserID != w.UserID || g.Subject != w.Subject || !errors.Is(g.Err, w.Err) || !slices.Equal(g.Revoked, w.Revoked) || len(g.Keys) != len(w.Keys) {
				t.Fatalf("answer %d: %+v, want %+v", i, g, w)
			}
			for j := range w.Keys {
				if g.Keys[j].String() != w.Keys[j].String() || !g.Keys[j].Secret.Equal(w.Keys[j].Secret) {
					t.Fatalf("answer %d key %d: %v, want %v", i, j, g.Keys[j], w.Keys[j])
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < 20; round++ {
		batch := make([]string, 1+r.IntN(len(users)))
		for i := range batch {
			batch[i] = users[r.IntN(len(users))]
		}
		got, err := c.ForEncryptInto(ctx, &a, batch, cats)
		if err != nil {
			t.Fatal(err)
		}
		kept := slices.Clone(got)
		want, err := c.ForEncrypt(ctx, batch, cats)
		if err != nil {
			t.Fatal(err)
		}
		same(kept, want)
		if round == 10 {
			f.DeleteUser(users[3])
			c.Forget(users[3])
		}
	}
	// Entries that lack a category asked are read (their subjects copied)
	// and then not answered but fetched, between entries that are
	// answered: every answer still names its own subject, in its keys too.
	plus := append(slices.Clone(cats), "profile")
	some := users[200:260]
	if _, err := c.ForEncrypt(ctx, some, cats); err != nil {
		t.Fatal(err)
	}
	var mixed []string
	for i, u := range some {
		if i%2 == 0 {
			mixed = append(mixed, u)
		}
	}
	if _, err := c.ForEncrypt(ctx, mixed, plus); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ForEncryptInto(ctx, &a, some, cats); err != nil {
		t.Fatal(err)
	}
	got, err := c.ForEncryptInto(ctx, &a, some, plus)
	if err != nil {
		t.Fatal(err)
	}
	kept := slices.Clone(got)
	want, err := c.ForEncrypt(ctx, some, plus)
	if err != nil {
		t.Fatal(err)
	}
	same(kept, want)

	subjects := []string{}
	enc, _ := c.ForEncrypt(ctx, users[:50], cats)
	for _, u := range enc {
		if u.Err == nil {
			subjects = append(subjects, u.Subject)
		}
	}
	got, err = c.ForDecryptInto(ctx, &a, subjects, cats)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = c.ForDecrypt(ctx, subjects, cats)
	same(got, want)

	warm := users[100:200]
	if _, err := c.ForEncryptInto(ctx, &a, warm, cats); err != nil {
		t.Fatal(err)
	}
	into := testing.AllocsPerRun(20, func() { _, _ = c.ForEncryptInto(ctx, &a, warm, cats) })
	fresh := testing.AllocsPerRun(20, func() { _, _ = c.ForEncrypt(ctx, warm, cats) })
	bytesOf := func(f func()) uint64 {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for range 20 {
			f()
		}
		runtime.ReadMemStats(&m1)
		return (m1.TotalAlloc - m0.TotalAlloc) / 20
	}
	intoBytes := bytesOf(func() { _, _ = c.ForEncryptInto(ctx, &a, warm, cats) })
	freshBytes := bytesOf(func() { _, _ = c.ForEncrypt(ctx, warm, cats) })
	t.Logf("100 warm users: into reused room %.0f allocations, %d bytes; into new room %.0f, %d bytes", into, intoBytes, fresh, freshBytes)
	if intoBytes*10 > freshBytes {
		t.Fatalf("a warm call into reused room allocated %d bytes, one into new room %d", intoBytes, freshBytes)
	}
	// Nothing per id: ForEncryptInto makes one string of its users'
	// subjects, ForDecryptInto answers with the subjects asked.
	if into > 10 {
		t.Fatalf("a warm ForEncryptInto of %d users made %.0f allocations", len(warm), into)
	}
	if _, err := c.ForDecryptInto(ctx, &a, subjects, cats); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = c.ForDecryptInto(ctx, &a, subjects, cats) }); n > 10 {
		t.Fatalf("a warm ForDecryptInto of %d subjects made %.0f allocations", len(subjects), n)
	}
}

// TestForEncryptSets: sets of users asked for varying subsets of a set,
// with the set as Also, are fetched once each in one RPC (the set's keys,
// all of them cached), under a window long enough to hang the test were
// the lookup waiting it out; answers hold the categories asked only, and
// equal ForEncrypt's. A set with categories of its own (a payload key)
// is fetched in a batch of its own, in the same lookup.
func TestForEncryptSets(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.BatchWindow = time.Hour; o.BatchAlone = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := []string{"contact", "device", "location"}
	var a, b, p Answers
	got, err := c.ForEncryptSets(ctx, []Set{
		{Answers: &a, UserIDs: []string{"u1", "u2"}, Categories: []string{"device"}, Also: all},
		{Answers: &b, UserIDs: []string{"u3"}, Categories: []string{"location", "contact"}, Also: all},
		{Answers: &p, UserIDs: []string{"u1", "u9"}, Categories: []string{"payload"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.Calls() != 2 || f.IDs() != 5 {
		t.Fatalf("%d fetches of %d ids for one lookup of 3 users for %v and 2 for payload, want 2 of 5", f.Calls(), f.IDs(), all)
	}
	if len(got) != 3 || len(got[0]) != 2 || len(got[1]) != 1 || len(got[2]) != 2 {
		t.Fatalf("answers of %d sets, want 3 sets of 2, 1 and 2 users", len(got))
	}
	for i, uk := range got[2] {
		if uk.UserID != []string{"u1", "u9"}[i] || len(uk.Keys) != 1 || uk.Keys[0].Category != "payload" {
			t.Fatalf("payload answer %d is %s's with %v", i, uk.UserID, uk.Keys)
		}
	}
	for _, uk := range got[0] {
		if len(uk.Keys) != 1 || uk.Keys[0].Category != "device" {
			t.Fatalf("answer of %s holds %v, want device only", uk.UserID, uk.Keys)
		}
	}
	if uk := got[1][0]; uk.UserID != "u3" || len(uk.Keys) != 2 || uk.Keys[0].Category != "location" || uk.Keys[1].Category != "contact" {
		t.Fatalf("answer of %s holds %v, want location and contact", uk.UserID, uk.Keys)
	}
	// Another subset, or the whole set: from the cache, equal to a fresh
	// client's answers.
	for _, cats := range [][]string{{"location", "contact"}, all} {
		calls := f.Calls()
		ids := []string{"u2", "u3", "u1"}
		sets, err := c.ForEncryptSets(ctx, []Set{{Answers: &a, UserIDs: ids, Categories: cats, Also: all}})
		if err != nil {
			t.Fatal(err)
		}
		got := sets[0]
		if f.Calls() != calls {
			t.Fatalf("%v: fetched again", cats)
		}
		want, err := newTestClient(t, f, nil).ForEncrypt(ctx, ids, cats)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if got[i].UserID != ids[i] || len(got[i].Keys) != len(want[i].Keys) {
				t.Fatalf("%v: answer %d is %s's with %d keys, want %s's with %d", cats, i, got[i].UserID, len(got[i].Keys), ids[i], len(want[i].Keys))
			}
			for j, k := range want[i].Keys {
				g := got[i].Keys[j]
				if g.Category != k.Category || g.Version != k.Version || !g.Secret.Equal(k.Secret) || g.Subject != k.Subject {
					t.Fatalf("%v: key %d of %s differs", cats, j, got[i].UserID)
				}
			}
		}
	}
}

// TestBatchAloneTakesPendingAlong: a small lookup waits out the window
// for company; a lookup of BatchAlone ids or more does not, and sends the
// small one's pending ids with its own, in one RPC.
func TestBatchAloneTakesPendingAlong(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.BatchWindow = time.Hour; o.BatchAlone = 64 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	small := make(chan error, 1)
	go func() {
		_, err := c.ForEncrypt(ctx, []string{"lone"}, cats)
		small <- err
	}()
	for pending := 0; pending == 0; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		pending = len(c.pending)
		c.mu.Unlock()
	}
	select {
	case err := <-small:
		t.Fatalf("a lookup of 1 id did not wait out the window (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i)
	}
	if _, err := c.ForEncrypt(ctx, ids, cats); err != nil {
		t.Fatal(err)
	}
	if err := <-small; err != nil {
		t.Fatal(err)
	}
	if f.Calls() != 1 || f.IDs() != 65 {
		t.Fatalf("%d RPCs of %d ids, want 1 of 65", f.Calls(), f.IDs())
	}
}

// TestFakeKeysAreHMACsOfTheirNames: the fake derives each key as
// HMAC-SHA256 under its seed of scope, subject and category (each ended by
// a zero byte) and the version, with one HMAC reset per key: the same
// names give the same key in every call, other names another.
func TestFakeKeysAreHMACsOfTheirNames(t *testing.T) {
	f := NewFake()
	want := func(scope, subject, category string, version int) []byte {
		m := hmac.New(sha256.New, f.seed[:])
		for _, s := range []string{scope, subject, category} {
			m.Write([]byte(s))
			m.Write([]byte{0})
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(version))
		m.Write(v[:])
		return m.Sum(nil)
	}
	ctx := context.Background()
	seen := map[string]bool{}
	for round := range 2 {
		for _, scope := range []string{"a", "ab"} {
			got, err := f.GetOrCreate(ctx, scope, []string{"u1", "u2"}, []string{"email", "location"})
			if err != nil {
				t.Fatal(err)
			}
			for _, uk := range got {
				for _, k := range uk.Keys {
					if w := want(scope, uk.Subject, k.Category, k.Version); !bytes.Equal(k.Secret.Expose(), w) {
						t.Fatalf("round %d: key of %s %s %s v%d is not the HMAC of its names", round, scope, uk.UserID, k.Category, k.Version)
					}
					seen[string(k.Secret.Expose())] = true
				}
			}
		}
	}
	if len(seen) != 8 {
		t.Fatalf("%d distinct keys for 2 scopes × 2 users × 2 categories", len(seen))
	}
}

// A client says whether its lookups wait on a network: over a remote
// service or several, yes; over an in-process Fake, only once it has a
// latency (it then stands for a remote one).
func TestNetworked(t *testing.T) {
	f := NewFake()
	c, err := New(f, Options{Scope: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Networked() {
		t.Error("a client over an in-process Fake says it is networked")
	}
	f.SetLatency(time.Millisecond)
	if !c.Networked() {
		t.Error("a client over a Fake with a latency says it is not networked")
	}
	r, err := NewRemote("http://127.0.0.1:1", Options{Scope: "s", Secret: "a-secret-of-enough-length"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Networked() {
		t.Error("a remote client says it is not networked")
	}
	m, err := NewMultiRemote([]string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, "a-secret-of-enough-length", nil, MultiOptions{HealthInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mc, err := newClient(m, m, Options{Scope: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if !mc.Networked() {
		t.Error("a client over several remote endpoints says it is not networked")
	}
}

// Options.Deterministic: the keys of its categories carry an AES-SIV key
// derived as they are fetched, the others the AES-GCM key alone (zero
// bytes where the AES-SIV key would be), from the service and from the
// cache alike; nil derives it for every category, empty for none. Either
// way the AES-GCM key is the one fieldcrypt derives from the secret.
func TestDeterministicCategoriesGetSIVKeys(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name          string
		deterministic []string
		withSIV       []bool // per category of cats
	}{
		{"nil", nil, []bool{true, true}},
		{"location", []string{"location"}, []bool{false, true}},
		{"empty", []string{}, []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestClient(t, NewFake(), func(o *Options) { o.Deterministic = tc.deterministic })
			for _, from := range []string{"service", "cache"} {
				uks, err := c.ForEncrypt(ctx, []string{"alice"}, cats)
				if err != nil || len(uks[0].Keys) != len(cats) {
					t.Fatalf("%s: %v %+v", from, err, uks)
				}
				for i, k := range uks[0].Keys {
					d := k.Derived()
					if d == nil {
						t.Fatalf("%s: %s carries no derived keys", from, k.Category)
					}
					want, err := fieldcrypt.DeriveKey(k)
					if err != nil {
						t.Fatal(err)
					}
					b := d.Expose()
					if !bytes.Equal(b[:32], want.Expose()[:32]) {
						t.Fatalf("%s: %s's AES-GCM key is not the derived one", from, k.Category)
					}
					hasSIV := !bytes.Equal(b[32:], make([]byte, 64))
					if hasSIV != tc.withSIV[i] || hasSIV && !bytes.Equal(b[32:], want.Expose()[32:]) {
						t.Fatalf("%s: %s has an AES-SIV key: %v, want %v (or a wrong one)", from, k.Category, hasSIV, tc.withSIV[i])
					}
				}
			}
			// An entry's slots are 64 or 128 bytes by whether they hold an
			// AES-SIV key: fetched one category at a time, merged into one
			// entry in either order, each answers its own key.
			for _, order := range [][]string{cats, {cats[1], cats[0]}} {
				user := "bob-" + order[0]
				var want []fieldcrypt.CategoryKey
				for _, cat := range order {
					uks, err := c.ForEncrypt(ctx, []string{user}, []string{cat})
					if err != nil || len(uks[0].Keys) != 1 {
						t.Fatal(err, uks)
					}
					want = append(want, uks[0].Keys[0])
				}
				calls := c.Stats().RPCs
				uks, err := c.ForEncrypt(ctx, []string{user}, order)
				if err != nil || len(uks[0].Keys) != 2 || c.Stats().RPCs != calls {
					t.Fatalf("%v: %v %+v (%d RPCs, %d before)", order, err, uks, c.Stats().RPCs, calls)
				}
				for i, k := range uks[0].Keys {
					if !k.Secret.Equal(want[i].Secret) || !bytes.Equal(k.Derived().Expose(), want[i].Derived().Expose()) {
						t.Fatalf("%v: %s answered from the merged entry differs from its fetch", order, k.Category)
					}
				}
			}
		})
	}
}
