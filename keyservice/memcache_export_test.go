package keyservice

import (
	"encoding/hex"
	"time"
)

// Test access to the memcached tier's internals (compiled into this
// package's tests only).

// MemcachedKeyForTest is the memcached key of row key.
func (m *MemcachedStore) MemcachedKeyForTest(row string) string { return m.key(row) }

// EncodeEntryForTest is the authenticated entry of row key with value,
// revision and read time, as this tier writes it.
func (m *MemcachedStore) EncodeEntryForTest(row string, value []byte, rev uint64, readAt time.Time) []byte {
	return m.encodeEntry(Item{Key: row, Value: value, Rev: rev, ReadAt: readAt})
}

// UserRowForTest is the index row key of a user id.
func (s *Service) UserRowForTest(userID string) string {
	sum := s.kr.userSum(userID)
	return prefixUser + hex.EncodeToString(sum[:])
}

// SubjectRowForTest is the keychain row key of a subject.
func SubjectRowForTest(subject string) string { return prefixSubject + subject }
