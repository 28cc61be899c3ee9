package keyservice

import (
	"context"
	"maps"
	"slices"
)

// Admin: what a keychain holds (without key bytes), cache statistics.

// Show describes the keychain of userID, read from the store (not the
// cache). A deleted user gives Deleted true and nil error.
func (s *Service) Show(ctx context.Context, userID string) (KeychainInfo, error) {
	if err := s.checkUserID(0, userID); err != nil {
		return KeychainInfo{}, err
	}
	items, err := s.store.Get(ctx, []string{prefixUser + s.kr.userHash(userID)})
	if err != nil {
		return KeychainInfo{}, storeErr("show", err)
	}
	if !items[0].Found() {
		return KeychainInfo{}, ErrUnknownUser
	}
	var ir indexRow
	if err := decodeRow(items[0], &ir); err != nil {
		return KeychainInfo{}, err
	}
	if ir.Deleted != nil {
		return KeychainInfo{Deleted: true, DeletedAt: *ir.Deleted}, nil
	}
	return s.ShowSubject(ctx, ir.Subject)
}

// ShowSubject describes the keychain of subject.
func (s *Service) ShowSubject(ctx context.Context, subject string) (KeychainInfo, error) {
	if !ValidSubject(subject) {
		return KeychainInfo{}, invalid("not a _subject (want s_ + 26 base32 characters)")
	}
	items, err := s.store.Get(ctx, []string{prefixSubject + subject})
	if err != nil {
		return KeychainInfo{}, storeErr("show", err)
	}
	if !items[0].Found() {
		return KeychainInfo{}, ErrUnknownSubject
	}
	var row keychainRow
	if err := decodeRow(items[0], &row); err != nil {
		return KeychainInfo{}, err
	}
	info := KeychainInfo{Subject: subject, Created: row.Created}
	if row.Deleted != nil {
		info.Deleted, info.DeletedAt = true, *row.Deleted
		return info, nil
	}
	for _, cat := range s.catList {
		ci := CategoryInfo{Category: cat, Versions: slices.Sorted(maps.Keys(row.Roots[cat]))}
		if t, ok := row.Revoked[cat]; ok {
			ci.Revoked, ci.RevokedAt = true, t
		}
		if len(ci.Versions) > 0 || ci.Revoked {
			info.Categories = append(info.Categories, ci)
		}
	}
	return info, nil
}

// CacheStats counts cache answers since the Service started: the
// in-process cache (keychains, user index, policies) and, when the store is
// a memcached tier, memcached's.
type CacheStats struct {
	ProcessHits, ProcessMisses uint64
	// ProcessRenewed counts the misses (expired entries) answered without
	// a store read: the row was unchanged in a store that is its only
	// writer (LocalWriter).
	ProcessRenewed                                  uint64
	ProcessEntries                                  int // rows cached in process now
	MemcachedHits, MemcachedMisses, MemcachedErrors uint64
	// MemcachedRejected counts the entries memcached returned that were not
	// used, by reason (indexed like RejectReasons; see CacheTier).
	MemcachedRejected [NumRejectReasons]uint64
	Memcached         bool // the store has a memcached tier (a CacheTier)
}

// CacheStats reads the cache counters.
func (s *Service) CacheStats() CacheStats {
	var st CacheStats
	if s.cache != nil {
		st.ProcessHits, st.ProcessMisses = s.cache.stats()
		st.ProcessRenewed = s.cache.renewals.Load()
		st.ProcessEntries = s.cache.len()
	}
	if m, ok := s.store.(CacheTier); ok {
		st.Memcached = true
		st.MemcachedHits, st.MemcachedMisses, st.MemcachedErrors = m.Stats()
		st.MemcachedRejected = m.Rejected()
	}
	return st
}

// PurgeCache drops every row the service caches in process (user index
// entries, keychains, the policies); they are read from the store again
// when next asked for. For a process whose pipeline run has ended and that
// goes on with other work (transforms.DropKeyCaches).
func (s *Service) PurgeCache() { s.cache.purge() }

// Close closes the store.
func (s *Service) Close() error { return s.store.Close() }
