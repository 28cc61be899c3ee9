package transforms

import (
	"fmt"
	"hash/fnv"
	"testing"
)

// TestShardOfIsFNV32a: the shard of an event id is fnv32a mod n, for
// strings and bytes alike (published datasets are laid out by it).
func TestShardOfIsFNV32a(t *testing.T) {
	for i := range 2000 {
		id := fmt.Sprintf("ev-%d-%x", i, i*7919)
		h := fnv.New32a()
		h.Write([]byte(id))
		for _, n := range []int{1, 3, 4, 64} {
			want := int(h.Sum32() % uint32(n))
			if got := shardOf(id, n); got != want {
				t.Fatalf("shardOf(%q, %d) = %d, want %d", id, n, got, want)
			}
			if got := shardOf([]byte(id), n); got != want {
				t.Fatalf("shardOf([]byte %q, %d) = %d, want %d", id, n, got, want)
			}
		}
	}
}
