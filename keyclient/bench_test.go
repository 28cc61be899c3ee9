package keyclient

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// BenchmarkWarmLookup: ForEncryptInto of batches of 1000 users drawn at random
// from 50k (benchUsers), all cached, 3 categories each, an AES-SIV key for one of them
// (ingest's steady state, Options.Deterministic as the pipelines' clients
// have it); ns/op is per user looked up.
func BenchmarkWarmLookup(b *testing.B) {
	c, err := New(NewFake(), Options{Scope: "bench", BatchWindow: -1, Deterministic: []string{"device"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cats := []string{"contact", "device", "location"}
	users := make([]string, benchUsers())
	for i := range users {
		users[i] = fmt.Sprintf("pii-user-%06d", i)
	}
	for i := 0; i < len(users); i += 1000 {
		if _, err := c.ForEncrypt(ctx, users[i:min(i+1000, len(users))], cats); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]string, 1000)
	var a Answers
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		for j := range batch {
			batch[j] = users[r.IntN(len(users))]
		}
		if _, err := c.ForEncryptInto(ctx, &a, batch, cats); err != nil {
			b.Fatal(err)
		}
	}
}

// benchUsers is how many users BenchmarkWarmLookup draws from:
// LOCKSTREAM_BENCH_USERS, default 50k. With 1000, the cache's entries stay
// in the CPU's caches and the benchmark measures the lookup's own work;
// with 50k, memory reads too, as in ingest.
func benchUsers() int {
	if n, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_USERS")); err == nil && n > 0 {
		return n
	}
	return 50_000
}
