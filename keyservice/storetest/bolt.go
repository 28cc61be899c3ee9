package storetest

import (
	"testing"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
)

// Bolt opens a bolt store in a new temporary directory of t: a Harness's
// Open for the stores that run on bolt.
func Bolt(t *testing.T) keyservice.Store {
	s, err := boltstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
