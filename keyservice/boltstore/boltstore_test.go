package boltstore_test

import (
	"testing"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: storetest.Bolt,
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store {
			dir := s.(*boltstore.Store).Dir()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := boltstore.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}
