package keyservice_test

import (
	"fmt"
	"testing"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

// BenchmarkGetByUser: warm GetByUser batches of 100 users on the bolt store
// (10,000 users, so batches rotate through the cache), reporting derived
// keys per second. "parallel" runs GOMAXPROCS callers, like a server.
func BenchmarkGetByUser(b *testing.B) {
	st, err := boltstore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := keyservice.New(st, keyservice.Options{MasterKey: storetest.MasterKey})
	if err != nil {
		b.Fatal(err)
	}
	const users, batch = 10_000, 100
	ids := make([]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-user-%05d", i)
	}
	for lo := 0; lo < users; lo += 1000 {
		if _, err := s.GetOrCreate(b.Context(), "bench", ids[lo:lo+1000], nil); err != nil {
			b.Fatal(err)
		}
	}
	for _, cats := range [][]string{{"contact"}, {"location", "device"}, keyservice.DefaultCategories} {
		for _, parallel := range []bool{false, true} {
			name := fmt.Sprintf("cats=%d", len(cats))
			if parallel {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				ctx := b.Context()
				run := func(i int) {
					lo := (i * batch) % users
					res, err := s.GetByUser(ctx, "bench", ids[lo:lo+batch], cats)
					if err != nil || len(res[0].Keys) != len(cats) {
						b.Fatal(err)
					}
				}
				for i := range 100 { // warm the cache
					run(i)
				}
				b.ResetTimer()
				if parallel {
					b.RunParallel(func(pb *testing.PB) {
						i := 0
						for pb.Next() {
							run(i)
							i++
						}
					})
				} else {
					for i := 0; b.Loop(); i++ {
						run(i)
					}
				}
				b.ReportMetric(float64(b.N*batch*len(cats))/b.Elapsed().Seconds(), "keys/s")
			})
		}
	}
}
