package keyservice

import (
	"context"
	"sync/atomic"
	"time"
)

// Policies: the per-category key versions every keychain follows, read from
// the store and cached per process.

type policy struct {
	cur, min int
}

// policySet is the policy of every category, as one read of the store gave
// them, and the generation of that read.
type policySet struct {
	byCat map[string]policy
	// gen numbers each policy set read from the store, so a keychain can
	// remember that it already satisfies one (needsRoots).
	gen uint64
}

// of returns the policy of category cat.
func (ps *policySet) of(cat string) policy { return ps.byCat[cat] }

// policyGen is the generation of the last policy set read (policySet.gen).
var policyGen atomic.Uint64

func (s *Service) policies(ctx context.Context) (*policySet, error) {
	if v, ok := s.cache.get(policiesKey, s.now()); ok {
		return v.(*policySet), nil
	}
	keys := make([]string, len(s.catList))
	for i, c := range s.catList {
		keys[i] = prefixPolicy + c
	}
	items, err := s.store.Get(ctx, keys)
	if err != nil {
		return nil, storeErr("read category policies", err)
	}
	out := make(map[string]policy, len(keys))
	var oldest time.Time
	for i, it := range items {
		p := policy{1, 1}
		if it.Found() {
			var r policyRow
			if err := decodeRow(it, &r); err != nil {
				return nil, err
			}
			p = policy{r.Current, r.Min}
		}
		out[s.catList[i]] = p
		if oldest.IsZero() || it.ReadAt.Before(oldest) {
			oldest = it.ReadAt
		}
	}
	ps := &policySet{byCat: out, gen: policyGen.Add(1)}
	s.cache.put(policiesKey, ps, s.expiry(oldest), 0)
	return ps, nil
}
