package keyclient

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// Fake is an in-memory key service for tests of code that uses Keys. It
// implements both Keys (each call is one "RPC", no cache) and Transport (put
// a Client in front of it to test caching and batching). Keys are derived
// deterministically from a per-Fake random seed, so the same (scope,
// subject, category, version) always gets the same key within one Fake.
//
// Faults: SetHook runs before every call and may return an error (for
// example Unavailable(nil) to exercise retries); SetLatency delays every
// call; Calls and IDs count them.
type Fake struct {
	mu       sync.Mutex
	seed     [32]byte
	users    map[string]*fakeChain
	subjects map[string]*fakeChain
	version  map[string]int // current version per category
	minVer   map[string]int
	cats     map[string]bool // nil: any category is known
	hook     func(ctx context.Context, op string, ids []string) error
	latency  time.Duration
	// mac is HMAC-SHA256 under seed, keyed once and reset per key; macIn
	// its message's room (both used with mu held).
	mac   hash.Hash
	macIn []byte

	calls, ids atomic.Int64
}

type fakeChain struct {
	subject string
	deleted bool
	revoked map[string]bool // nil until a category is revoked
}

// NewFake returns an empty fake service. With categories, requests naming
// any other category fail with ErrInvalidArgument.
func NewFake(categories ...string) *Fake {
	f := &Fake{users: map[string]*fakeChain{}, subjects: map[string]*fakeChain{}, version: map[string]int{}, minVer: map[string]int{}}
	_, _ = rand.Read(f.seed[:])
	if len(categories) > 0 {
		f.cats = map[string]bool{}
		for _, c := range categories {
			f.cats[c] = true
		}
	}
	return f
}

// SetHook installs fn, called before every call with the operation
// ("GetOrCreate" or "GetBySubject") and the ids; a non-nil error fails the
// call. nil removes the hook.
func (f *Fake) SetHook(fn func(ctx context.Context, op string, ids []string) error) {
	f.mu.Lock()
	f.hook = fn
	f.mu.Unlock()
}

// FailNext makes the next n calls fail with err.
func (f *Fake) FailNext(n int, err error) {
	var left atomic.Int64
	left.Store(int64(n))
	f.SetHook(func(context.Context, string, []string) error {
		if left.Add(-1) >= 0 {
			return err
		}
		return nil
	})
}

// SetLatency delays every call by d (honouring the call's context).
func (f *Fake) SetLatency(d time.Duration) { f.mu.Lock(); f.latency = d; f.mu.Unlock() }

// Networked reports whether f has a latency (SetLatency): such a Fake
// stands for a key service across a network (Client.Networked).
func (f *Fake) Networked() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.latency > 0 }

// Calls is the number of calls (RPCs) so far; IDs the number of ids in them.
func (f *Fake) Calls() int64 { return f.calls.Load() }

// IDs is the number of ids asked for so far.
func (f *Fake) IDs() int64 { return f.ids.Load() }

// DeleteUser shreds a user's keychain. It reports whether the user existed.
func (f *Fake) DeleteUser(userID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.users[userID]
	if !ok {
		f.users[userID] = &fakeChain{deleted: true}
		return false
	}
	ch.deleted = true
	return true
}

// Revoke revokes one category of a user.
func (f *Fake) Revoke(userID, category string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.users[userID]; ok {
		if ch.revoked == nil {
			ch.revoked = map[string]bool{}
		}
		ch.revoked[category] = true
	}
}

// Rotate starts a new version of a category and returns it.
func (f *Fake) Rotate(category string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version[category] = f.cur(category) + 1
	return f.version[category]
}

// SubjectOf returns a user's subject ("" when the user has none).
func (f *Fake) SubjectOf(userID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.users[userID]; ok {
		return ch.subject
	}
	return ""
}

func (f *Fake) cur(category string) int {
	if v := f.version[category]; v > 0 {
		return v
	}
	return 1
}

// key derives a key from the seed: HMAC-SHA256 of scope, subject and
// category (each ended by a zero byte) and the version, its secret in the
// next 32 bytes of *room (a call's keys share allocations of 64 secrets).
// f.mu is held.
func (f *Fake) key(scope, subject, category string, version int, room *[]byte) fieldcrypt.CategoryKey {
	if f.mac == nil {
		f.mac = hmac.New(sha256.New, f.seed[:])
	}
	f.mac.Reset()
	in := f.macIn[:0]
	for _, s := range []string{scope, subject, category} {
		in = append(append(in, s...), 0)
	}
	f.macIn = binary.BigEndian.AppendUint64(in, uint64(version))
	f.mac.Write(f.macIn)
	if len(*room) < sha256.Size {
		*room = make([]byte, 64*sha256.Size)
	}
	secret := f.mac.Sum((*room)[:0:sha256.Size])
	*room = (*room)[sha256.Size:]
	return fieldcrypt.CategoryKey{Subject: subject, Category: category, Version: version, Secret: fieldcrypt.SecretOf(secret)}
}

func (f *Fake) begin(ctx context.Context, op string, ids, categories []string) error {
	f.calls.Add(1)
	f.ids.Add(int64(len(ids)))
	f.mu.Lock()
	hook, lat := f.hook, f.latency
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, op, ids); err != nil {
			return err
		}
	}
	if lat > 0 {
		t := time.NewTimer(lat)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return Unavailable(ctx.Err())
		}
	}
	if err := ctx.Err(); err != nil {
		return Unavailable(err)
	}
	for _, c := range categories {
		if c == "" || (f.cats != nil && !f.cats[c]) {
			return fmt.Errorf("%w: unknown category", ErrInvalidArgument)
		}
	}
	for _, id := range ids {
		if id == "" {
			return fmt.Errorf("%w: empty id", ErrInvalidArgument)
		}
	}
	return nil
}

// GetOrCreate implements Transport.
func (f *Fake) GetOrCreate(ctx context.Context, scope string, userIDs, categories []string) ([]UserKeys, error) {
	if err := f.begin(ctx, "GetOrCreate", userIDs, categories); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]UserKeys, len(userIDs))
	keys := make([]fieldcrypt.CategoryKey, 0, len(userIDs)*len(categories))
	var room []byte
	for i, id := range userIDs {
		ch, ok := f.users[id]
		if !ok {
			var b [16]byte
			_, _ = rand.Read(b[:])
			ch = &fakeChain{subject: "s_" + hex.EncodeToString(b[:])}
			f.users[id] = ch
			f.subjects[ch.subject] = ch
		}
		out[i].UserID = id
		if ch.deleted {
			out[i].Err = ErrUserDeleted
			continue
		}
		out[i].Subject = ch.subject
		from := len(keys)
		for _, c := range categories {
			if ch.revoked[c] {
				out[i].Revoked = append(out[i].Revoked, c)
				continue
			}
			keys = append(keys, f.key(scope, ch.subject, c, f.cur(c), &room))
		}
		if len(keys) > from {
			out[i].Keys = keys[from:len(keys):len(keys)]
		}
	}
	return out, nil
}

// GetBySubject implements Transport.
func (f *Fake) GetBySubject(ctx context.Context, scope string, subjects, categories []string) ([]UserKeys, error) {
	if err := f.begin(ctx, "GetBySubject", subjects, categories); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]UserKeys, len(subjects))
	var room []byte
	for i, s := range subjects {
		out[i].Subject = s
		ch, ok := f.subjects[s]
		switch {
		case !ok:
			out[i].Err = ErrUnknownSubject
			continue
		case ch.deleted:
			out[i].Err = ErrUserDeleted
			continue
		}
		for _, c := range categories {
			if ch.revoked[c] {
				out[i].Revoked = append(out[i].Revoked, c)
				continue
			}
			for v := max(1, f.minVer[c]); v <= f.cur(c); v++ {
				out[i].Keys = append(out[i].Keys, f.key(scope, s, c, v, &room))
			}
		}
	}
	return out, nil
}

// FakeScope is the scope the Fake's Keys methods derive keys for.
const FakeScope = "fake"

// ForEncrypt implements Keys (one call, no cache).
func (f *Fake) ForEncrypt(ctx context.Context, userIDs, categories []string) ([]UserKeys, error) {
	return f.GetOrCreate(ctx, FakeScope, userIDs, slices.Clone(categories))
}

// ForDecrypt implements Keys (one call, no cache).
func (f *Fake) ForDecrypt(ctx context.Context, subjects, categories []string) ([]UserKeys, error) {
	return f.GetBySubject(ctx, FakeScope, subjects, slices.Clone(categories))
}
