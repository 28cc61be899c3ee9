package memcachedstore_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/memcachedstore"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestContractOverBolt(t *testing.T) {
	addr := storetest.Memcached(t)
	ns := 0
	storetest.Run(t, storetest.Harness{
		Open: storetest.Bolt,
		Wrap: func(t *testing.T, s keyservice.Store) keyservice.Store {
			mc, err := memcachedstore.New(s, []string{addr}, 0, storetest.MasterKey)
			if err != nil {
				t.Fatal(err)
			}
			ns++ // each store of the suite is a separate deployment
			mc.SetNamespace(strconv.Itoa(ns))
			return mc
		},
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store {
			mc := s.(*memcachedstore.Store)
			dir := mc.Inner().(*boltstore.Store).Dir()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := boltstore.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			mc2, err := memcachedstore.New(b, []string{addr}, 0, storetest.MasterKey)
			if err != nil {
				t.Fatal(err)
			}
			mc2.SetNamespace(strconv.Itoa(ns))
			return mc2
		},
	})
}

// TestMemcachedStaleWindow: two nodes share memcached and the store; after a
// delete on node A, node B stops serving the user within the stale window —
// both when A evicts the memcached entry (the normal path) and when the
// delete bypassed memcached entirely (only the TTL/age rule saves B).
func TestMemcachedStaleWindow(t *testing.T) {
	addr := storetest.Memcached(t)
	const window = time.Second
	for _, tc := range []struct {
		bypass, lru bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		bypass := tc.bypass
		name := map[bool]string{false: "EvictedByDeleter", true: "DeleteBypassesCache"}[bypass]
		name += map[bool]string{false: "/NoLocalCache", true: "/LocalCache"}[tc.lru]
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			inner := memstore.New()
			open := func(cacheSize int) (*memcachedstore.Store, *keyservice.Service) {
				mc, err := memcachedstore.New(inner, []string{addr}, window, storetest.MasterKey)
				if err != nil {
					t.Fatal(err)
				}
				mc.SetNamespace(t.Name())
				s, err := keyservice.New(mc, keyservice.Options{MasterKey: storetest.MasterKey, StaleWindow: window, CacheSize: cacheSize})
				if err != nil {
					t.Fatal(err)
				}
				return mc, s
			}
			_, a := open(0)
			cacheB := -1 // B reads memcached on every call
			if tc.lru {
				cacheB = 0 // B also has its in-process cache (default size)
			}
			mcB, b := open(cacheB)
			user := "stale-user"
			uk, err := a.GetOrCreate(ctx, "svc", []string{user}, []string{"contact"})
			if err != nil || uk[0].Err != nil {
				t.Fatal(err, uk)
			}
			// B reads the user (fills memcached and its own cache).
			for range 3 {
				got, err := b.GetByUser(ctx, "svc", []string{user}, []string{"contact"})
				if err != nil || got[0].Err != nil {
					t.Fatalf("B before delete: %v %+v", err, got)
				}
			}
			if h, _, _ := mcB.Stats(); h == 0 && !tc.lru {
				t.Fatal("B never hit memcached")
			}
			deleter := a
			if bypass {
				var err error
				deleter, err = keyservice.New(inner, keyservice.Options{MasterKey: storetest.MasterKey})
				if err != nil {
					t.Fatal(err)
				}
			}
			deleted := time.Now()
			if err := deleter.DeleteUser(ctx, user); err != nil {
				t.Fatal(err)
			}
			limit := deleted.Add(window + time.Second) // window + memcached clock granularity
			for {
				got, err := b.GetByUser(ctx, "svc", []string{user}, []string{"contact"})
				if err != nil {
					t.Fatal(err)
				}
				if errors.Is(got[0].Err, keyservice.ErrUserDeleted) {
					t.Logf("B stopped serving %v after the delete", time.Since(deleted).Round(time.Millisecond))
					break
				}
				if got[0].Err != nil || len(got[0].Keys) != 1 {
					t.Fatalf("B: unexpected %+v", got[0])
				}
				if time.Now().After(limit) {
					t.Fatalf("B still serves the deleted user %v after the delete (window %v)", time.Since(deleted), window)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestMemcachedNoNegativeCaching: a user unknown to node B becomes readable
// on B as soon as A creates it.
func TestMemcachedNoNegativeCaching(t *testing.T) {
	addr := storetest.Memcached(t)
	ctx := t.Context()
	inner := memstore.New()
	svc := func() *keyservice.Service {
		mc, err := memcachedstore.New(inner, []string{addr}, time.Minute, storetest.MasterKey)
		if err != nil {
			t.Fatal(err)
		}
		mc.SetNamespace(t.Name())
		s, err := keyservice.New(mc, keyservice.Options{MasterKey: storetest.MasterKey, StaleWindow: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := svc(), svc()
	got, err := b.GetByUser(ctx, "svc", []string{"newbie"}, nil)
	if err != nil || !errors.Is(got[0].Err, keyservice.ErrUnknownUser) {
		t.Fatalf("before create: %v %+v", err, got)
	}
	if _, err := a.GetOrCreate(ctx, "svc", []string{"newbie"}, nil); err != nil {
		t.Fatal(err)
	}
	got, err = b.GetByUser(ctx, "svc", []string{"newbie"}, nil)
	if err != nil || got[0].Err != nil {
		t.Fatalf("after create on A, B: %v %+v", err, got)
	}
}

func TestMemcachedDown(t *testing.T) {
	// A memcached that is not there: the tier reads through.
	port := storetest.FreePort(t)
	mc, err := memcachedstore.New(memstore.New(), []string{"127.0.0.1:" + strconv.Itoa(port)}, time.Second, storetest.MasterKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := keyservice.New(mc, keyservice.Options{MasterKey: storetest.MasterKey})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetOrCreate(t.Context(), "svc", []string{"u"}, nil)
	if err != nil || got[0].Err != nil {
		t.Fatalf("%v %+v", err, got)
	}
	if _, _, errs := mc.Stats(); errs == 0 {
		t.Fatal("no memcached error counted")
	}
}
