package keyservice_test

import (
	"fmt"
	"testing"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestMemoryStoreContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) keyservice.Store { return keyservice.NewMemoryStore() },
		// A MemoryStore keeps its data across Close: a Service restart.
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store { s.Close(); return s },
	})
}

func TestBoltStoreContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) keyservice.Store {
			s, err := keyservice.OpenBolt(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store {
			dir := s.(*keyservice.BoltStore).Dir()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := keyservice.OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}

func TestBigtableStoreContract(t *testing.T) {
	storetest.BigtableEmulator(t)
	n := 0
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) keyservice.Store {
			n++
			s, err := keyservice.OpenBigtable(t.Context(), "proj", "inst", fmt.Sprintf("keys-%d", n), keyservice.BigtableOptions{CreateTable: true})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store {
			table := s.(*keyservice.BigtableStore).Table()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := keyservice.OpenBigtable(t.Context(), "proj", "inst", table, keyservice.BigtableOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}
