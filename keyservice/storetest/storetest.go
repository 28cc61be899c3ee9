// Package storetest is the contract-test suite of the key service: it runs
// the semantics of keyservice.Service (get-or-create, batches, deletion,
// revocation, rotation, bad input, concurrent creation, restart) against any
// keyservice.Store. Every backend runs the same suite.
//
// It also starts the real backing services for tests (the Bigtable emulator
// from the gcloud SDK, memcached) on free ports.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyservice"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// Harness opens stores of one backend.
type Harness struct {
	// Open returns a new, empty store. The suite closes it.
	Open func(t *testing.T) keyservice.Store
	// Reopen closes s and opens the same data again, as a restart would.
	// Nil: the restart tests are not run (a backend without durability).
	Reopen func(t *testing.T, s keyservice.Store) keyservice.Store
	// Wrap, if set, wraps every store the suite opens (e.g. in a cache
	// tier); it may return s itself.
	Wrap func(t *testing.T, s keyservice.Store) keyservice.Store
}

// MasterKey is the master key the suite uses.
var MasterKey = fieldcrypt.NewSecret(bytes.Repeat([]byte{7}, 32))

const scope = "svc.test"

// Run runs the contract suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		f    func(t *testing.T, h Harness)
	}{
		{"StoreRevisions", testStoreRevisions},
		{"NewUserReadableAtOnce", testNewUser},
		{"Batch", testBatch},
		{"Scopes", testScopes},
		{"DeleteUser", testDeleteUser},
		{"DeleteSubject", testDeleteSubject},
		{"NewKeychainAfterDelete", testNewKeychainAfterDelete},
		{"Revoke", testRevoke},
		{"Rotate", testRotate},
		{"BadInput", testBadInput},
		{"WrongMasterKey", testWrongMasterKey},
		{"ConcurrentCreate", testConcurrentCreate},
		{"Restart", testRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, h) })
	}
}

func (h Harness) open(t *testing.T) keyservice.Store {
	t.Helper()
	s := h.Open(t)
	if h.Wrap != nil {
		s = h.Wrap(t, s)
	}
	return s
}

func newService(t *testing.T, st keyservice.Store, mod func(*keyservice.Options)) *keyservice.Service {
	t.Helper()
	o := keyservice.Options{MasterKey: MasterKey}
	if mod != nil {
		mod(&o)
	}
	s, err := keyservice.New(st, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// one returns a checker of a one-id call: one(t)(s.GetByUser(…)).
func one(t *testing.T) func(res []keyservice.UserKeys, err error) keyservice.UserKeys {
	return func(res []keyservice.UserKeys, err error) keyservice.UserKeys {
		t.Helper()
		if err != nil {
			t.Fatalf("call failed: %v", err)
		}
		if len(res) != 1 {
			t.Fatalf("got %d results, want 1", len(res))
		}
		return res[0]
	}
}

func key(t *testing.T, uk keyservice.UserKeys, cat string, version int) fieldcrypt.CategoryKey {
	t.Helper()
	for _, k := range uk.Keys {
		if k.Category == cat && k.Version == version {
			if k.Secret.Len() != fieldcrypt.CategoryKeySize || k.Subject != uk.Subject {
				t.Fatalf("bad key %v (len %d)", k, k.Secret.Len())
			}
			return k
		}
	}
	t.Fatalf("no key %s v%d in %v", cat, version, uk.Keys)
	return fieldcrypt.CategoryKey{}
}

func versions(uk keyservice.UserKeys, cat string) []int {
	var out []int
	for _, k := range uk.Keys {
		if k.Category == cat {
			out = append(out, k.Version)
		}
	}
	return out
}

// testStoreRevisions checks the Store contract itself: revisions,
// compare-and-set, conflicts returning the current row, delete.
func testStoreRevisions(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	items, err := st.Get(c, []string{"a", "b"})
	if err != nil || len(items) != 2 || items[0].Found() || items[0].Key != "a" || items[1].Key != "b" {
		t.Fatalf("Get(absent) = %+v, %v", items, err)
	}
	it, err := st.Put(c, "a", []byte("one"), 0)
	if err != nil || it.Rev == 0 || string(it.Value) != "one" {
		t.Fatalf("create = %+v, %v", it, err)
	}
	r1 := it.Rev
	cur, err := st.Put(c, "a", []byte("other"), 0)
	if !errors.Is(err, keyservice.ErrConflict) || cur.Rev != r1 || string(cur.Value) != "one" {
		t.Fatalf("second create = %+v, %v; want ErrConflict and the current row", cur, err)
	}
	it, err = st.Put(c, "a", []byte("two"), r1)
	if err != nil || it.Rev <= r1 || string(it.Value) != "two" {
		t.Fatalf("update = %+v, %v", it, err)
	}
	r2 := it.Rev
	cur, err = st.Put(c, "a", []byte("stale"), r1)
	if !errors.Is(err, keyservice.ErrConflict) || cur.Rev != r2 || string(cur.Value) != "two" {
		t.Fatalf("stale update = %+v, %v", cur, err)
	}
	cur, err = st.Put(c, "b", []byte("x"), 5)
	if !errors.Is(err, keyservice.ErrConflict) || cur.Found() {
		t.Fatalf("update of absent row = %+v, %v", cur, err)
	}
	items, err = st.Get(c, []string{"b", "a", "a"})
	if err != nil || items[0].Found() || items[1].Rev != r2 || string(items[2].Value) != "two" {
		t.Fatalf("Get = %+v, %v", items, err)
	}
	if err := st.Delete(c, "a"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(c, "never"); err != nil {
		t.Fatalf("Delete(absent) = %v", err)
	}
	items, err = st.Get(c, []string{"a"})
	if err != nil || items[0].Found() || items[0].Value != nil {
		t.Fatalf("Get after delete = %+v, %v", items, err)
	}
	if _, err := st.Put(c, "a", []byte("again"), 0); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func testNewUser(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	a := newService(t, st, nil)
	uk := one(t)(a.GetOrCreate(c, scope, []string{"alice"}, []string{"contact", "device"}))
	if uk.Err != nil || !keyservice.ValidSubject(uk.Subject) || uk.UserID != "alice" || len(uk.Keys) != 2 {
		t.Fatalf("GetOrCreate = %+v", uk)
	}
	if uk.Keys[0].Category != "contact" || uk.Keys[1].Category != "device" {
		t.Fatalf("keys not in requested category order: %v", uk.Keys)
	}
	k := key(t, uk, "contact", 1)
	if _, err := fieldcrypt.NewCipher(k); err != nil {
		t.Fatalf("key not usable by fieldcrypt: %v", err)
	}
	// Another service on the same store (another node) reads it at once.
	b := newService(t, st, nil)
	for _, svc := range []*keyservice.Service{a, b} {
		got := one(t)(svc.GetByUser(c, scope, []string{"alice"}, []string{"contact"}))
		if got.Err != nil || got.Subject != uk.Subject || !key(t, got, "contact", 1).Secret.Equal(k.Secret) {
			t.Fatalf("GetByUser = %+v, want subject %s and the same key", got, uk.Subject)
		}
		bs := one(t)(svc.GetBySubject(c, scope, []string{uk.Subject}, []string{"contact"}))
		if bs.Err != nil || bs.UserID != "" || len(bs.Keys) != 1 || !key(t, bs, "contact", 1).Secret.Equal(k.Secret) {
			t.Fatalf("GetBySubject = %+v", bs)
		}
	}
	// Idempotent.
	again := one(t)(b.GetOrCreate(c, scope, []string{"alice"}, nil))
	if again.Subject != uk.Subject || len(again.Keys) != len(keyservice.DefaultCategories) {
		t.Fatalf("second GetOrCreate = %+v", again)
	}
	if !key(t, again, "contact", 1).Secret.Equal(k.Secret) {
		t.Fatal("second GetOrCreate returned another key")
	}
	info, err := b.Show(c, "alice")
	if err != nil || info.Subject != uk.Subject || info.Deleted || len(info.Categories) != len(keyservice.DefaultCategories) {
		t.Fatalf("Show = %+v, %v", info, err)
	}
	if strings.Contains(fmt.Sprintf("%+v %#v", info, uk), string(k.Secret.Expose())) {
		t.Fatal("key bytes printed")
	}
}

func testBatch(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	s := newService(t, st, nil)
	var ids []string
	for i := range 50 {
		ids = append(ids, fmt.Sprintf("user-%d", i))
	}
	ids = append(ids, "user-3", "user-7", "user-3") // duplicates are answered each
	res, err := s.GetOrCreate(c, scope, ids, []string{"location"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(ids) {
		t.Fatalf("%d results for %d ids", len(res), len(ids))
	}
	subs := map[string]string{}
	for i, r := range res {
		if r.Err != nil || r.UserID != ids[i] || len(r.Keys) != 1 {
			t.Fatalf("result %d = %+v", i, r)
		}
		if prev, ok := subs[r.UserID]; ok && prev != r.Subject {
			t.Fatalf("duplicate %s answered with two subjects", r.UserID)
		}
		subs[r.UserID] = r.Subject
	}
	if len(subs) != 50 {
		t.Fatalf("%d distinct users", len(subs))
	}
	seen := map[string]bool{}
	for _, sub := range subs {
		if seen[sub] {
			t.Fatal("two users share a subject")
		}
		seen[sub] = true
	}
	// By user, with unknown users mixed in.
	q := []string{"user-9", "nobody", "user-0", "user-9"}
	got, err := s.GetByUser(c, scope, q, []string{"location"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Subject != subs["user-9"] || got[2].Subject != subs["user-0"] || got[3].Subject != subs["user-9"] {
		t.Fatalf("GetByUser order/subjects wrong: %+v", got)
	}
	if !errors.Is(got[1].Err, keyservice.ErrUnknownUser) || got[1].UserID != "nobody" || len(got[1].Keys) != 0 {
		t.Fatalf("unknown user = %+v", got[1])
	}
	// By subject, with an unknown subject mixed in.
	bySub := []string{subs["user-5"], "s_aaaaaaaaaaaaaaaaaaaaaaaaaa", subs["user-6"]}
	bs, err := s.GetBySubject(c, scope, bySub, []string{"location"})
	if err != nil {
		t.Fatal(err)
	}
	if bs[0].Subject != bySub[0] || bs[2].Subject != bySub[2] || len(bs[0].Keys) != 1 || len(bs[2].Keys) != 1 {
		t.Fatalf("GetBySubject = %+v", bs)
	}
	if !errors.Is(bs[1].Err, keyservice.ErrUnknownSubject) {
		t.Fatalf("unknown subject = %+v", bs[1])
	}
	if !bs[0].Keys[0].Secret.Equal(res[5].Keys[0].Secret) {
		t.Fatal("by-subject key differs from by-user key")
	}
	empty, err := s.GetOrCreate(c, scope, nil, nil)
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty batch = %v, %v", empty, err)
	}
}

func testScopes(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	s := newService(t, st, nil)
	a := one(t)(s.GetOrCreate(c, "ingest", []string{"u"}, []string{"contact"}))
	b := one(t)(s.GetOrCreate(c, "analytics.view", []string{"u"}, []string{"contact"}))
	if a.Subject != b.Subject {
		t.Fatal("subject depends on scope")
	}
	if a.Keys[0].Secret.Equal(b.Keys[0].Secret) {
		t.Fatal("two scopes got the same key")
	}
	b2 := one(t)(s.GetBySubject(c, "analytics.view", []string{a.Subject}, []string{"contact"}))
	if !b2.Keys[0].Secret.Equal(b.Keys[0].Secret) {
		t.Fatal("same scope, different key")
	}
}

func mustDeleted(t *testing.T, s *keyservice.Service, user, subject string) {
	t.Helper()
	c := ctx(t)
	for name, f := range map[string]func() ([]keyservice.UserKeys, error){
		"GetByUser":    func() ([]keyservice.UserKeys, error) { return s.GetByUser(c, scope, []string{user}, nil) },
		"GetOrCreate":  func() ([]keyservice.UserKeys, error) { return s.GetOrCreate(c, scope, []string{user}, nil) },
		"GetBySubject": func() ([]keyservice.UserKeys, error) { return s.GetBySubject(c, scope, []string{subject}, nil) },
	} {
		uk := one(t)(f())
		if !errors.Is(uk.Err, keyservice.ErrUserDeleted) || len(uk.Keys) != 0 {
			t.Fatalf("%s after delete = %+v, want ErrUserDeleted and no key", name, uk)
		}
	}
	if err := s.Revoke(c, user, "contact"); !errors.Is(err, keyservice.ErrUserDeleted) {
		t.Fatalf("Revoke after delete = %v", err)
	}
	info, err := s.Show(c, user)
	if err != nil || !info.Deleted || info.Subject != "" || len(info.Categories) != 0 {
		t.Fatalf("Show after delete = %+v, %v", info, err)
	}
	info, err = s.ShowSubject(c, subject)
	if err != nil || !info.Deleted || len(info.Categories) != 0 {
		t.Fatalf("ShowSubject after delete = %+v, %v", info, err)
	}
}

func testDeleteUser(t *testing.T, h Harness) {
	st := h.open(t)
	defer func() { st.Close() }()
	c := ctx(t)
	s := newService(t, st, nil)
	res, err := s.GetOrCreate(c, scope, []string{"gone", "stays"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, stays := res[0], res[1]
	if err := s.DeleteUser(c, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(c, "gone"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	mustDeleted(t, s, "gone", gone.Subject)
	other := newService(t, st, nil) // another node, cold cache
	mustDeleted(t, other, "gone", gone.Subject)
	// A node that cached the user before the delete stops serving it once
	// its stale window has passed.
	clock := newClock()
	warm := newService(t, st, func(o *keyservice.Options) { o.Now = clock.Now; o.StaleWindow = time.Second })
	late := one(t)(warm.GetOrCreate(c, scope, []string{"late"}, nil))
	if err := s.DeleteUser(c, "late"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	mustDeleted(t, warm, "late", late.Subject)
	got := one(t)(other.GetByUser(c, scope, []string{"stays"}, nil))
	if got.Err != nil || got.Subject != stays.Subject || !got.Keys[0].Secret.Equal(stays.Keys[0].Secret) {
		t.Fatalf("other user affected: %+v", got)
	}
	// Deleting a user never seen leaves a tombstone: a late event does not create them.
	if err := s.DeleteUser(c, "never-seen"); err != nil {
		t.Fatal(err)
	}
	if uk := one(t)(s.GetOrCreate(c, scope, []string{"never-seen"}, nil)); !errors.Is(uk.Err, keyservice.ErrUserDeleted) {
		t.Fatalf("GetOrCreate of pre-deleted user = %+v", uk)
	}
	if h.Reopen != nil {
		st = h.Reopen(t, st)
		mustDeleted(t, newService(t, st, nil), "gone", gone.Subject)
	}
}

func testDeleteSubject(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	s := newService(t, st, nil)
	uk := one(t)(s.GetOrCreate(c, scope, []string{"bob"}, nil))
	if err := s.DeleteSubject(c, uk.Subject); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubject(c, uk.Subject); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	mustDeleted(t, s, "bob", uk.Subject)
	mustDeleted(t, newService(t, st, nil), "bob", uk.Subject)
	if err := s.DeleteSubject(c, "s_aaaaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, keyservice.ErrUnknownSubject) {
		t.Fatalf("DeleteSubject(unknown) = %v", err)
	}
	if err := s.DeleteSubject(c, "bob"); !errors.Is(err, keyservice.ErrInvalidArgument) {
		t.Fatalf("DeleteSubject(not a subject) = %v", err)
	}
}

func testNewKeychainAfterDelete(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	pol := func(o *keyservice.Options) { o.AfterDelete = keyservice.NewKeychainAfterDelete }
	s := newService(t, st, pol)
	clock := newClock()
	peer := newService(t, st, func(o *keyservice.Options) { pol(o); o.Now = clock.Now })
	old := one(t)(s.GetOrCreate(c, scope, []string{"carol"}, []string{"contact"}))
	// The peer caches the old mapping.
	if uk := one(t)(peer.GetOrCreate(c, scope, []string{"carol"}, []string{"contact"})); uk.Subject != old.Subject {
		t.Fatal("peer sees another subject")
	}
	if err := s.DeleteUser(c, "carol"); err != nil {
		t.Fatal(err)
	}
	if uk := one(t)(s.GetByUser(c, scope, []string{"carol"}, nil)); !errors.Is(uk.Err, keyservice.ErrUserDeleted) {
		t.Fatalf("GetByUser after delete = %+v", uk)
	}
	fresh := one(t)(s.GetOrCreate(c, scope, []string{"carol"}, []string{"contact"}))
	if fresh.Err != nil || fresh.Subject == old.Subject || !keyservice.ValidSubject(fresh.Subject) {
		t.Fatalf("GetOrCreate after delete = %+v (old subject %s)", fresh, old.Subject)
	}
	if fresh.Keys[0].Secret.Equal(old.Keys[0].Secret) {
		t.Fatal("new keychain has the old key")
	}
	// The peer, once its stale window has passed, converges on the new keychain.
	clock.Advance(keyservice.DefaultStaleWindow + time.Second)
	if uk := one(t)(peer.GetOrCreate(c, scope, []string{"carol"}, []string{"contact"})); uk.Subject != fresh.Subject {
		t.Fatalf("peer GetOrCreate = %+v, want subject %s", uk, fresh.Subject)
	}
	if uk := one(t)(s.GetBySubject(c, scope, []string{old.Subject}, nil)); !errors.Is(uk.Err, keyservice.ErrUserDeleted) {
		t.Fatalf("old subject = %+v, want deleted", uk)
	}
	// Under the default policy the same store says deleted.
	deny := newService(t, st, nil)
	if err := deny.DeleteUser(c, "carol"); err != nil {
		t.Fatal(err)
	}
	if uk := one(t)(deny.GetOrCreate(c, scope, []string{"carol"}, nil)); !errors.Is(uk.Err, keyservice.ErrUserDeleted) {
		t.Fatalf("deny policy GetOrCreate = %+v", uk)
	}
}

func testRevoke(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	s := newService(t, st, nil)
	uk := one(t)(s.GetOrCreate(c, scope, []string{"dave"}, []string{"contact", "device"}))
	if err := s.Revoke(c, "dave", "contact"); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(c, "dave", "contact"); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	for _, svc := range []*keyservice.Service{s, newService(t, st, nil)} {
		for name, f := range map[string]func() ([]keyservice.UserKeys, error){
			"GetOrCreate": func() ([]keyservice.UserKeys, error) {
				return svc.GetOrCreate(c, scope, []string{"dave"}, []string{"contact", "device"})
			},
			"GetByUser": func() ([]keyservice.UserKeys, error) {
				return svc.GetByUser(c, scope, []string{"dave"}, []string{"contact", "device"})
			},
			"GetBySubject": func() ([]keyservice.UserKeys, error) {
				return svc.GetBySubject(c, scope, []string{uk.Subject}, []string{"contact", "device"})
			},
		} {
			got := one(t)(f())
			if got.Err != nil || len(got.Revoked) != 1 || got.Revoked[0] != "contact" || len(got.Keys) != 1 || got.Keys[0].Category != "device" {
				t.Fatalf("%s after revoke = %+v", name, got)
			}
			if !got.Keys[0].Secret.Equal(uk.Keys[1].Secret) {
				t.Fatalf("%s: other category's key changed", name)
			}
		}
	}
	// Rotation does not bring a revoked category back.
	if _, err := s.Rotate(c, "contact"); err != nil {
		t.Fatal(err)
	}
	if got := one(t)(s.GetOrCreate(c, scope, []string{"dave"}, []string{"contact"})); len(got.Keys) != 0 || len(got.Revoked) != 1 {
		t.Fatalf("after rotate = %+v", got)
	}
	info, err := s.Show(c, "dave")
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range info.Categories {
		if ci.Category == "contact" && (!ci.Revoked || len(ci.Versions) != 0) {
			t.Fatalf("Show: contact = %+v", ci)
		}
	}
	if err := s.Revoke(c, "nobody", "contact"); !errors.Is(err, keyservice.ErrUnknownUser) {
		t.Fatalf("Revoke(unknown) = %v", err)
	}
	if err := s.Revoke(c, "dave", "nope"); !errors.Is(err, keyservice.ErrInvalidArgument) || !errors.Is(err, keyservice.ErrUnknownCategory) {
		t.Fatalf("Revoke(unknown category) = %v", err)
	}
}

func testRotate(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	s := newService(t, st, nil)
	old := one(t)(s.GetOrCreate(c, scope, []string{"erin"}, []string{"contact", "device"}))
	v, err := s.Rotate(c, "contact")
	if err != nil || v != 2 {
		t.Fatalf("Rotate = %d, %v", v, err)
	}
	cur := one(t)(s.GetOrCreate(c, scope, []string{"erin"}, []string{"contact", "device"}))
	k2 := key(t, cur, "contact", 2)
	if k2.Secret.Equal(key(t, old, "contact", 1).Secret) {
		t.Fatal("rotated key equals the old one")
	}
	if !key(t, cur, "device", 1).Secret.Equal(key(t, old, "device", 1).Secret) {
		t.Fatal("rotation changed another category")
	}
	// Lazy and idempotent: another node agrees on the v2 root key.
	peer := newService(t, st, nil)
	if !key(t, one(t)(peer.GetByUser(c, scope, []string{"erin"}, []string{"contact"})), "contact", 2).Secret.Equal(k2.Secret) {
		t.Fatal("peer got another v2 key")
	}
	// Old versions stay decryptable by subject.
	bs := one(t)(peer.GetBySubject(c, scope, []string{old.Subject}, []string{"contact"}))
	if vs := versions(bs, "contact"); len(vs) != 2 || vs[0] != 1 || vs[1] != 2 {
		t.Fatalf("by subject versions = %v, want [1 2]", vs)
	}
	if !key(t, bs, "contact", 1).Secret.Equal(key(t, old, "contact", 1).Secret) {
		t.Fatal("v1 by subject differs")
	}
	// A user created after the rotation starts at v2.
	nu := one(t)(s.GetOrCreate(c, scope, []string{"frank"}, []string{"contact"}))
	if vs := versions(one(t)(s.GetBySubject(c, scope, []string{nu.Subject}, []string{"contact"})), "contact"); len(vs) != 1 || vs[0] != 2 {
		t.Fatalf("new user versions = %v", vs)
	}
	if err := s.SetMinVersion(c, "contact", 3); !errors.Is(err, keyservice.ErrInvalidArgument) {
		t.Fatalf("SetMinVersion above current = %v", err)
	}
	if err := s.SetMinVersion(c, "contact", 2); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []*keyservice.Service{s, newService(t, st, nil)} {
		bs = one(t)(svc.GetBySubject(c, scope, []string{old.Subject}, []string{"contact"}))
		if vs := versions(bs, "contact"); len(vs) != 1 || vs[0] != 2 {
			t.Fatalf("after SetMinVersion(2) versions = %v", vs)
		}
	}
	if cur, min, err := s.CategoryVersions(c, "contact"); cur != 2 || min != 2 || err != nil {
		t.Fatalf("CategoryVersions = %d, %d, %v", cur, min, err)
	}
	// The next keychain update destroys root keys below min.
	if _, err := s.Rotate(c, "contact"); err != nil {
		t.Fatal(err)
	}
	one(t)(s.GetOrCreate(c, scope, []string{"erin"}, []string{"contact"}))
	info, err := s.Show(c, "erin")
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range info.Categories {
		if ci.Category == "contact" && fmt.Sprint(ci.Versions) != "[2 3]" {
			t.Fatalf("contact versions after min 2 + rotate = %v, want [2 3]", ci.Versions)
		}
	}
}

func testBadInput(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	s := newService(t, st, func(o *keyservice.Options) { o.MaxBatch = 10; o.MaxUserIDLen = 16 })
	secretID := "user@example.com"
	cases := map[string]func() error{
		"empty id": func() error { _, err := s.GetOrCreate(c, scope, []string{"a", ""}, nil); return err },
		"long id": func() error {
			_, err := s.GetOrCreate(c, scope, []string{secretID + "-and-more"}, nil)
			return err
		},
		"batch": func() error {
			_, err := s.GetByUser(c, scope, make([]string, 11), nil)
			return err
		},
		"subject batch": func() error {
			_, err := s.GetBySubject(c, scope, make([]string, 11), nil)
			return err
		},
		"unknown category": func() error { _, err := s.GetOrCreate(c, scope, []string{"a"}, []string{"shoe_size"}); return err },
		"empty scope":      func() error { _, err := s.GetOrCreate(c, "", []string{"a"}, nil); return err },
		"bad scope":        func() error { _, err := s.GetOrCreate(c, "Ingest!", []string{"a"}, nil); return err },
		"long scope":       func() error { _, err := s.GetOrCreate(c, strings.Repeat("a", 65), []string{"a"}, nil); return err },
		"bad subject": func() error {
			_, err := s.GetBySubject(c, scope, []string{secretID}, nil)
			return err
		},
		"delete empty":    func() error { return s.DeleteUser(c, "") },
		"rotate unknown":  func() error { _, err := s.Rotate(c, "nope"); return err },
		"min 0":           func() error { return s.SetMinVersion(c, "contact", 0) },
		"show long":       func() error { _, err := s.Show(c, strings.Repeat("x", 17)); return err },
		"revoke category": func() error { return s.Revoke(c, "a", "nope") },
	}
	for name, f := range cases {
		err := f()
		if !errors.Is(err, keyservice.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
			continue
		}
		if strings.Contains(err.Error(), secretID) {
			t.Errorf("%s: error contains the user id: %v", name, err)
		}
	}
	if _, err := s.GetOrCreate(c, scope, []string{"a"}, []string{"shoe_size"}); !errors.Is(err, keyservice.ErrUnknownCategory) {
		t.Errorf("unknown category: %v, want ErrUnknownCategory too", err)
	}
	if _, err := keyservice.New(st, keyservice.Options{MasterKey: fieldcrypt.NewSecret(make([]byte, 16))}); err == nil {
		t.Error("New accepted a 16-byte master key")
	}
}

func testWrongMasterKey(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	s := newService(t, st, nil)
	one(t)(s.GetOrCreate(ctx(t), scope, []string{"u"}, nil))
	_, err := keyservice.New(st, keyservice.Options{MasterKey: fieldcrypt.NewSecret(bytes.Repeat([]byte{8}, 32))})
	if !errors.Is(err, keyservice.ErrSealedRow) || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("New with another master key = %v, want ErrSealedRow naming the master key", err)
	}
}

// testConcurrentCreate: 8 services (nodes, each with its own cache) create
// the same 1,000 users at once; exactly one subject and one root key per
// (user, category) must result.
func testConcurrentCreate(t *testing.T, h Harness) {
	st := h.open(t)
	defer st.Close()
	c := ctx(t)
	const nodes, users = 8, 1000
	ids := make([]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("race-%04d", i)
	}
	svcs := make([]*keyservice.Service, nodes)
	for i := range svcs {
		svcs[i] = newService(t, st, nil)
	}
	results := make([][]keyservice.UserKeys, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range nodes {
		wg.Go(func() {
			<-start
			// Reverse half the nodes' order to maximize interleaving.
			q := ids
			if i%2 == 1 {
				q = make([]string, users)
				for j := range ids {
					q[j] = ids[users-1-j]
				}
			}
			res, err := svcs[i].GetOrCreate(c, scope, q, []string{"contact", "device"})
			if i%2 == 1 && err == nil {
				for j, k := 0, len(res)-1; j < k; j, k = j+1, k-1 {
					res[j], res[k] = res[k], res[j]
				}
			}
			results[i], errs[i] = res, err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	subjects := make([]string, users)
	for j := range ids {
		want := results[0][j]
		if want.Err != nil || want.UserID != ids[j] || len(want.Keys) != 2 {
			t.Fatalf("node 0 user %d: %+v", j, want)
		}
		subjects[j] = want.Subject
		for i := 1; i < nodes; i++ {
			got := results[i][j]
			if got.Err != nil || got.Subject != want.Subject {
				t.Fatalf("user %d: node %d got subject %s, node 0 %s", j, i, got.Subject, want.Subject)
			}
			for k := range got.Keys {
				if !got.Keys[k].Secret.Equal(want.Keys[k].Secret) {
					t.Fatalf("user %d: node %d got another %s key", j, i, got.Keys[k].Category)
				}
			}
		}
	}
	// A cold node sees exactly one root key (version) per category, and
	// derives the same keys.
	cold := newService(t, st, nil)
	for lo := 0; lo < users; lo += 250 {
		bs, err := cold.GetBySubject(c, scope, subjects[lo:lo+250], []string{"contact", "device"})
		if err != nil {
			t.Fatal(err)
		}
		for j, uk := range bs {
			want := results[0][lo+j]
			if uk.Err != nil || len(uk.Keys) != 2 {
				t.Fatalf("cold by subject %d: %+v", lo+j, uk)
			}
			for k := range uk.Keys {
				if !uk.Keys[k].Secret.Equal(want.Keys[k].Secret) {
					t.Fatalf("cold node derived another key for user %d", lo+j)
				}
			}
		}
	}
}

func testRestart(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Log("backend has no Reopen: restart not tested")
		return
	}
	st := h.open(t)
	c := ctx(t)
	s := newService(t, st, nil)
	res, err := s.GetOrCreate(c, scope, []string{"keep", "drop", "optout"}, []string{"contact"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(c, "drop"); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(c, "optout", "contact"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(c, "device"); err != nil {
		t.Fatal(err)
	}
	st = h.Reopen(t, st)
	defer st.Close()
	s = newService(t, st, nil)
	keep := one(t)(s.GetByUser(c, scope, []string{"keep"}, []string{"contact"}))
	if keep.Subject != res[0].Subject || !keep.Keys[0].Secret.Equal(res[0].Keys[0].Secret) {
		t.Fatalf("after restart keep = %+v", keep)
	}
	mustDeleted(t, s, "drop", res[1].Subject)
	if uk := one(t)(s.GetByUser(c, scope, []string{"optout"}, []string{"contact"})); len(uk.Revoked) != 1 || len(uk.Keys) != 0 {
		t.Fatalf("after restart optout = %+v", uk)
	}
	if cur, _, _ := s.CategoryVersions(c, "device"); cur != 2 {
		t.Fatalf("device version after restart = %d, want 2", cur)
	}
}
