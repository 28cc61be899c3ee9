package keyservice_test

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestOpenStore(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "keys")
	st, err := keyservice.OpenStore(ctx, "bolt:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*keyservice.BoltStore); !ok {
		t.Fatalf("bolt: gave %T", st)
	}
	st.Close()
	st, err = keyservice.OpenStore(ctx, "memory:")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*keyservice.MemoryStore); !ok {
		t.Fatalf("memory: gave %T", st)
	}
	st, err = keyservice.OpenStore(ctx, "memory:", keyservice.WithMemcached([]string{"127.0.0.1:1"}, 3*time.Second, storetest.MasterKey))
	if err != nil {
		t.Fatal(err)
	}
	if mc, ok := st.(*keyservice.MemcachedStore); !ok || mc.StaleWindow() != 3*time.Second {
		t.Fatalf("memcached tier: %T", st)
	}
	for _, bad := range []string{"", "nope", "ftp://x", "bolt:", "bigtable://p/i", "bigtable://p//t", "bigtable://p/i/t?create=maybe"} {
		if _, err := keyservice.OpenStore(ctx, bad); !errors.Is(err, keyservice.ErrInvalidArgument) {
			t.Errorf("OpenStore(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestOpenStoreBigtable(t *testing.T) {
	storetest.BigtableEmulator(t)
	st, err := keyservice.OpenStore(t.Context(), "bigtable://proj/inst/opened?create=true")
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
