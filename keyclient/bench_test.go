package keyclient

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkWarmLookup: ForEncryptInto of batches of 1000 users drawn at random
// from 50k, all cached, 3 categories each, an AES-SIV key for one of them
// (ingest's steady state, Options.Deterministic as the pipelines' clients
// have it); ns/op is per user looked up.
func BenchmarkWarmLookup(b *testing.B) {
	c, err := New(NewFake(), Options{Scope: "bench", BatchWindow: -1, Deterministic: []string{"device"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cats := []string{"contact", "device", "location"}
	users := make([]string, 50_000)
	for i := range users {
		users[i] = fmt.Sprintf("pii-user-%06d", i)
	}
	for i := 0; i < len(users); i += 1000 {
		if _, err := c.ForEncrypt(ctx, users[i:i+1000], cats); err != nil {
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
