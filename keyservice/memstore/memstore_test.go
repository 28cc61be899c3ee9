package memstore_test

import (
	"testing"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) keyservice.Store { return memstore.New() },
		// A Store keeps its data across Close: a Service restart.
		Reopen: func(t *testing.T, s keyservice.Store) keyservice.Store { s.Close(); return s },
	})
}
