package bigtablestore_test

import (
	"fmt"
	"testing"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/bigtablestore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestContract(t *testing.T) {
	storetest.BigtableEmulator(t)
	n := 0
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) keyservice.Store {
			n++
			s, err := bigtablestore.Open(t.Context(), "proj", "inst", fmt.Sprintf("keys-%d", n), bigtablestore.Options{CreateTable: true})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store {
			table := s.(*bigtablestore.Store).Table()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := bigtablestore.Open(t.Context(), "proj", "inst", table, bigtablestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}
