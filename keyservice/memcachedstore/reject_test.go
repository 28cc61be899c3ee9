package memcachedstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

// TestMemcachedRejectsBadEntries puts each kind of bad entry into memcached
// where the tier will read it — corrupt bytes, a truncated entry, another
// user's index row or keychain (swapped), a tombstone forged without the
// master key, an entry of another namespace, an authentic entry replayed
// long after it expired, one read in the future, an entry of the old
// unauthenticated format — and checks that each is rejected, counted by
// reason, and never served: the answer is the store's (same subject, same
// keys, the user alive).
func TestMemcachedRejectsBadEntries(t *testing.T) {
	addr := storetest.Memcached(t)
	ctx := t.Context()
	const window = 2 * time.Second
	inner := memstore.New()
	tier := func(ns string, master fieldcrypt.Secret) *Store {
		mc, err := New(inner, []string{addr}, window, master)
		if err != nil {
			t.Fatal(err)
		}
		mc.SetNamespace(ns)
		return mc
	}
	mc := tier(t.Name(), storetest.MasterKey)
	// No in-process cache: every call reads memcached.
	svc, err := keyservice.New(mc, keyservice.Options{MasterKey: storetest.MasterKey, StaleWindow: window, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	cats := []string{"contact", "device"}
	get := func(user string) keyservice.UserKeys {
		t.Helper()
		got, err := svc.GetByUser(ctx, "svc", []string{user}, cats)
		if err != nil {
			t.Fatal(err)
		}
		return got[0]
	}
	want := map[string]keyservice.UserKeys{}
	// A user's keychain row is "sub_" + its subject; its index row is the
	// "uid_" row its creation added to the store.
	indexRow := map[string]string{}
	for _, u := range []string{"alice", "bob"} {
		before := inner.Dump()
		if _, err := svc.GetOrCreate(ctx, "svc", []string{u}, cats); err != nil {
			t.Fatal(err)
		}
		for k := range inner.Dump() {
			if _, old := before[k]; !old && strings.HasPrefix(k, "uid_") {
				indexRow[u] = k
			}
		}
		want[u] = get(u) // fills memcached
	}
	same := func(a, b keyservice.UserKeys) bool {
		if a.Subject != b.Subject || !errors.Is(a.Err, b.Err) || len(a.Keys) != len(b.Keys) {
			return false
		}
		for i := range a.Keys {
			if a.Keys[i].Category != b.Keys[i].Category || a.Keys[i].Version != b.Keys[i].Version || !bytes.Equal(a.Keys[i].Secret.Expose(), b.Keys[i].Secret.Expose()) {
				return false
			}
		}
		return true
	}
	raw := memcache.New(addr)
	entry := func(row string) []byte {
		t.Helper()
		it, err := raw.Get(mc.key(row))
		if err != nil {
			t.Fatalf("memcached holds no entry for a row just read: %v", err)
		}
		return it.Value
	}
	put := func(row string, v []byte) {
		t.Helper()
		if err := raw.Set(&memcache.Item{Key: mc.key(row), Value: v, Expiration: 60}); err != nil {
			t.Fatal(err)
		}
	}
	aliceIdx, bobIdx := indexRow["alice"], indexRow["bob"]
	aliceKC, bobKC := "sub_"+want["alice"].Subject, "sub_"+want["bob"].Subject
	if aliceIdx == "" || bobIdx == "" || aliceIdx == bobIdx {
		t.Fatalf("index rows not found: %q %q", aliceIdx, bobIdx)
	}
	encode := func(m *Store, row string, value []byte, rev uint64, readAt time.Time) []byte {
		return m.encodeEntry(keyservice.Item{Key: row, Value: value, Rev: rev, ReadAt: readAt})
	}
	tombstone, _ := json.Marshal(map[string]any{"v": 1, "deleted": time.Now().UTC()})
	otherMaster := fieldcrypt.NewSecret(bytes.Repeat([]byte{9}, 32))
	flip := func(b []byte, i int) []byte { b = slices.Clone(b); b[i] ^= 0x20; return b }

	get("alice") // memcached holds both of alice's rows now
	for _, tc := range []struct {
		name   string
		reason string
		bad    func() (row string, v []byte)
	}{
		{"corrupt value", "mac", func() (string, []byte) { e := entry(aliceIdx); return aliceIdx, flip(e, len(e)-3) }},
		{"corrupt revision", "mac", func() (string, []byte) { return aliceIdx, flip(entry(aliceIdx), 5) }},
		{"corrupt keychain", "mac", func() (string, []byte) { e := entry(aliceKC); return aliceKC, flip(e, len(e)/2) }},
		{"truncated", "malformed", func() (string, []byte) { return aliceIdx, entry(aliceIdx)[:20] }},
		{"old format", "malformed", func() (string, []byte) { e := entry(aliceIdx); e[0] = 1; return aliceIdx, e }},
		{"swapped index row (alice -> bob's subject)", "mac", func() (string, []byte) { return aliceIdx, entry(bobIdx) }},
		{"swapped keychain row", "mac", func() (string, []byte) { return aliceKC, entry(bobKC) }},
		{"forged tombstone (another master key)", "mac", func() (string, []byte) {
			return aliceIdx, encode(tier(t.Name(), otherMaster), aliceIdx, tombstone, 99, time.Now())
		}},
		{"tombstone of another namespace", "mac", func() (string, []byte) {
			return aliceIdx, encode(tier(t.Name()+"-other", storetest.MasterKey), aliceIdx, tombstone, 99, time.Now())
		}},
		{"replayed past the window", "replayed", func() (string, []byte) {
			return aliceIdx, encode(mc, aliceIdx, tombstone, 99, time.Now().Add(-time.Hour))
		}},
		{"read in the future", "future", func() (string, []byte) {
			return aliceIdx, encode(mc, aliceIdx, tombstone, 99, time.Now().Add(time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			row, v := tc.bad()
			before := svc.CacheStats().MemcachedRejected
			put(row, v)
			got := get("alice")
			if !same(got, want["alice"]) {
				t.Fatalf("served from a bad entry: subject %q (want %q), err %v, %d keys", got.Subject, want["alice"].Subject, got.Err, len(got.Keys))
			}
			after := svc.CacheStats().MemcachedRejected
			for i, name := range keyservice.RejectReasons {
				d := after[i] - before[i]
				if name == tc.reason && d != 1 || name != tc.reason && d != 0 {
					t.Errorf("rejected[%s] += %d", name, d)
				}
			}
			// Read through: the tier wrote the store's row back.
			if again := get("alice"); !same(again, want["alice"]) {
				t.Fatal("second read differs")
			}
		})
	}
	// An authentic entry is served, not rejected; bob was never touched.
	before := svc.CacheStats()
	if got := get("bob"); !same(got, want["bob"]) {
		t.Fatal("bob changed")
	}
	after := svc.CacheStats()
	if after.MemcachedHits <= before.MemcachedHits || after.MemcachedRejected != before.MemcachedRejected {
		t.Fatalf("a good entry: hits %d -> %d, rejected %v -> %v", before.MemcachedHits, after.MemcachedHits, before.MemcachedRejected, after.MemcachedRejected)
	}
}
