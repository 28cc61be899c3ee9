package keyservice_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

// The in-package tests run on these stores (see export_test.go).
func init() {
	keyservice.NewMemoryStoreForTest = func() keyservice.Store { return memstore.New() }
	keyservice.OpenBoltForTest = func(dir string) (keyservice.LocalWriter, error) {
		s, err := boltstore.Open(dir)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// TestWrongMasterKeyRows: rows written under one master key fail to open
// under another, with a clear error, even past the check row.
func TestWrongMasterKeyRows(t *testing.T) {
	st := memstore.New()
	s, err := keyservice.New(st, keyservice.Options{MasterKey: storetest.MasterKey})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.GetOrCreate(t.Context(), "svc", []string{"u"}, nil)
	if err != nil || res[0].Err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(t.Context(), keyservice.MasterCheckRow); err != nil { // as if the check row were lost
		t.Fatal(err)
	}
	s2, err := keyservice.New(st, keyservice.Options{MasterKey: fieldcrypt.NewSecret(bytes.Repeat([]byte{9}, 32))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.GetBySubject(t.Context(), "svc", []string{res[0].Subject}, nil)
	if !errors.Is(err, keyservice.ErrSealedRow) || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("GetBySubject under another master key = %v", err)
	}
	// The user index is keyed by the master key too: another key does not find the user.
	got, err := s2.GetByUser(t.Context(), "svc", []string{"u"}, nil)
	if err != nil || !errors.Is(got[0].Err, keyservice.ErrUnknownUser) {
		t.Fatalf("GetByUser under another master key = %v %+v", err, got)
	}
}

// TestStoreHoldsNoPII: no row key or value holds a user id, a root key or a
// derived key in the clear.
func TestStoreHoldsNoPII(t *testing.T) {
	st := memstore.New()
	s, err := keyservice.New(st, keyservice.Options{MasterKey: storetest.MasterKey})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"alice@example.com", "bob-1234567", "carol.c@example.org"}
	res, err := s.GetOrCreate(t.Context(), "svc", ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Revoke(t.Context(), ids[1], "contact")
	s.DeleteUser(t.Context(), ids[2])
	for k, v := range st.Dump() {
		for _, id := range ids {
			if strings.Contains(k, id) || bytes.Contains(v, []byte(id)) {
				t.Fatalf("row %q holds a user id", k)
			}
		}
		for _, r := range res {
			for _, key := range r.Keys {
				if bytes.Contains(v, key.Secret.Expose()) {
					t.Fatalf("row %q holds a derived key", k)
				}
			}
		}
	}
}

// TestStoreUnavailable: transient store failures fail the call with
// keyservice.ErrUnavailable (no server-side retry), and never mention the user id.
func TestStoreUnavailable(t *testing.T) {
	st := memstore.New()
	s, err := keyservice.New(st, keyservice.Options{MasterKey: storetest.MasterKey, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	st.SetFault(func(op, key string) error {
		calls++
		return fmt.Errorf("injected: %w", keyservice.ErrUnavailable)
	})
	_, err = s.GetOrCreate(t.Context(), "svc", []string{"alice@example.com"}, nil)
	if !errors.Is(err, keyservice.ErrUnavailable) || strings.Contains(err.Error(), "alice") {
		t.Fatalf("GetOrCreate with store down = %v", err)
	}
	if calls != 1 {
		t.Fatalf("store called %d times, want 1 (no retries)", calls)
	}
	st.SetFault(nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.GetByUser(ctx, "svc", []string{"u"}, nil); !errors.Is(err, keyservice.ErrUnavailable) {
		t.Fatalf("canceled context = %v", err)
	}
	if err := s.DeleteUser(ctx, "u"); !errors.Is(err, keyservice.ErrUnavailable) {
		t.Fatalf("canceled delete = %v", err)
	}
}
