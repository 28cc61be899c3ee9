package stores_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/memcachedstore"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/stores"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestOpen(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "keys")
	st, err := stores.Open(ctx, "bolt:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*boltstore.Store); !ok {
		t.Fatalf("bolt: gave %T", st)
	}
	st.Close()
	st, err = stores.Open(ctx, "memory:")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*memstore.Store); !ok {
		t.Fatalf("memory: gave %T", st)
	}
	st, err = stores.Open(ctx, "memory:", stores.WithMemcached([]string{"127.0.0.1:1"}, 3*time.Second, storetest.MasterKey))
	if err != nil {
		t.Fatal(err)
	}
	if mc, ok := st.(*memcachedstore.Store); !ok || mc.StaleWindow() != 3*time.Second {
		t.Fatalf("memcached tier: %T", st)
	}
	for _, bad := range []string{"", "nope", "ftp://x", "bolt:", "bigtable://p/i", "bigtable://p//t", "bigtable://p/i/t?create=maybe"} {
		if _, err := stores.Open(ctx, bad); !errors.Is(err, keyservice.ErrInvalidArgument) {
			t.Errorf("Open(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestOpenBigtable(t *testing.T) {
	storetest.BigtableEmulator(t)
	st, err := stores.Open(t.Context(), "bigtable://proj/inst/opened?create=true")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := keyservice.New(st, keyservice.Options{MasterKey: storetest.MasterKey})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetOrCreate(t.Context(), "svc", []string{"u"}, nil); err != nil || got[0].Err != nil {
		t.Fatalf("%v %+v", err, got)
	}
}
