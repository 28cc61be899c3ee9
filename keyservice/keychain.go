package keyservice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// Keychains: one user's root keys per category and version, opened from
// their store rows, created on first use, and the keys derived from them.

// keychain is a keychain row with its root keys opened (as HKDF PRKs), in
// the form the cache keeps: apart from a few strings and the memo of
// derived keys it holds no pointers, so that a cache of many keychains
// costs the garbage collector little to scan (maps of maps of the decoded
// row did: a 10k-user cache was ~135 MB of pointers whose marking, every
// few seconds, was the load bench's p99). It is immutable once published
// in the cache, except for okGen and derived, which only memoize.
type keychain struct {
	subject string
	raw     []byte // the row as stored (sealed root keys only): decoded again to update it; recognises it unchanged
	rev     uint64
	readAt  time.Time
	gone    bool // a tombstone: the keychain was deleted
	// cats holds, by position in Service.catList, each configured
	// category's revocation and the versions with a root key; categories
	// of the row that are no longer configured are only in raw.
	cats  []catRoots
	roots []rootKey     // sorted by category position, then version
	okGen atomic.Uint64 // policy generation this keychain needs no new roots for
	// derived memoizes keys derived from roots (copy-on-write). It lives and
	// dies with this keychain, i.e. with its cache entry: same stale-window
	// expiry, dropped at once when this node deletes or revokes.
	derived atomic.Pointer[[]derivedKey]
}

// catRoots is one configured category of a keychain.
type catRoots struct {
	revoked        bool
	oldest, latest int // lowest and highest version with a root key; 0: none
}

// rootKey is one opened root key: HKDF-Extract of it (the PRK).
type rootKey struct {
	cat, version int // cat: position in Service.catList
	prk          [sha256.Size]byte
}

// derivedKey is one memoized derive(prk, scope, category, version).
type derivedKey struct {
	scope        string
	cat, version int // cat: position in Service.catList
	key          fieldcrypt.Secret
}

// maxDerivedPerKeychain bounds the memoized keys of one keychain (scopes
// are caller-supplied); keys beyond it are derived on every call.
const maxDerivedPerKeychain = 64

func (k *keychain) deleted() bool { return k.gone }

// prk returns the opened root key of (category position ci, version), or
// nil.
func (k *keychain) prk(ci, version int) []byte {
	for i := range k.roots {
		if r := &k.roots[i]; r.cat == ci && r.version == version {
			return r.prk[:]
		}
	}
	return nil
}

// key returns the key of (scope, category, version) derived from this
// keychain's root key, memoized; ci is category's position in
// Service.catList. The root key must exist.
func (k *keychain) key(scope string, ci int, category string, version int) (fieldcrypt.Secret, error) {
	cur := k.derived.Load()
	if cur != nil {
		for i := range *cur {
			if d := &(*cur)[i]; d.version == version && d.cat == ci && d.scope == scope {
				return d.key, nil
			}
		}
	}
	prk := k.prk(ci, version)
	if prk == nil {
		return fieldcrypt.Secret{}, fmt.Errorf("keyservice: keychain lacks category %s version %d: %w", category, version, ErrUnavailable)
	}
	sec, err := derive(prk, scope, category, version)
	if err != nil {
		return fieldcrypt.Secret{}, err
	}
	d := derivedKey{scope: strings.Clone(scope), cat: ci, version: version, key: sec}
	for {
		var n int
		if cur != nil {
			n = len(*cur)
		}
		if n >= maxDerivedPerKeychain {
			break
		}
		next := make([]derivedKey, n+1)
		if cur != nil {
			copy(next, *cur)
		}
		next[n] = d
		if k.derived.CompareAndSwap(cur, &next) {
			break
		}
		cur = k.derived.Load() // lost a race: another caller published first
	}
	return sec, nil
}

func (s *Service) openKeychain(it Item, subject string) (*keychain, error) {
	var row keychainRow
	if err := decodeRow(it, &row); err != nil {
		return nil, err
	}
	kc := &keychain{subject: subject, raw: bytes.Clone(it.Value), rev: it.Rev, readAt: it.ReadAt,
		gone: row.Deleted != nil, cats: make([]catRoots, len(s.catList))}
	n := 0
	for cat, vers := range row.Roots {
		if _, ok := s.catIdx[cat]; ok {
			n += len(vers)
		}
	}
	kc.roots = make([]rootKey, 0, n)
	for cat, vers := range row.Roots {
		ci, ok := s.catIdx[cat]
		if !ok {
			continue // no longer configured: never asked for
		}
		c := &kc.cats[ci]
		for v, sealed := range vers {
			root, err := s.kr.open(sealed, it.Key, cat, v)
			if err != nil {
				return nil, fmt.Errorf("keyservice: keychain row: %w", err)
			}
			prk, err := extract(root)
			if err != nil {
				return nil, err
			}
			r := rootKey{cat: ci, version: v}
			copy(r.prk[:], prk)
			kc.roots = append(kc.roots, r)
			if c.oldest == 0 || v < c.oldest {
				c.oldest = v
			}
			c.latest = max(c.latest, v)
		}
	}
	slices.SortFunc(kc.roots, func(a, b rootKey) int {
		if a.cat != b.cat {
			return a.cat - b.cat
		}
		return a.version - b.version
	})
	for cat := range row.Revoked {
		if ci, ok := s.catIdx[cat]; ok {
			kc.cats[ci].revoked = true
		}
	}
	return kc, nil
}

// reopenKeychain is openKeychain for a row read again after its cache
// entry expired: when the row is byte-identical to the expired entry's, the
// opened root keys and memoized derived keys are reused (a refresh then
// costs a store read, not a decryption per root key and an HKDF per derived
// key); the new keychain carries the new read time and revision.
func (s *Service) reopenKeychain(it Item, subject string, now time.Time) (*keychain, error) {
	v, ok := s.cache.expired(subjectKey(subject), now)
	old, _ := v.(*keychain)
	if !ok || old == nil || old.subject != subject || !bytes.Equal(old.raw, it.Value) {
		return s.openKeychain(it, subject)
	}
	kc := &keychain{subject: subject, raw: old.raw, rev: it.Rev, readAt: it.ReadAt,
		gone: old.gone, cats: old.cats, roots: old.roots}
	kc.okGen.Store(old.okGen.Load())
	kc.derived.Store(old.derived.Load())
	return kc, nil
}

// loadKeychains returns the keychains of subjects, in order (nil for absent
// rows), from the cache or the store.
func (s *Service) loadKeychains(ctx context.Context, subjects []string, fresh bool) ([]*keychain, error) {
	return s.loadKeychainsInto(ctx, subjects, fresh, nil)
}

// loadKeychainsInto is loadKeychains answering in buf's array when it is
// large enough.
func (s *Service) loadKeychainsInto(ctx context.Context, subjects []string, fresh bool, buf []*keychain) ([]*keychain, error) {
	out := slices.Grow(buf[:0], len(subjects))[:len(subjects)]
	clear(out)
	var miss []string
	var missAt map[string][]int // subject -> positions in out; only on a miss
	now := s.now()
	for i, sub := range subjects {
		if !fresh {
			if v, ok := s.cache.get(subjectKey(sub), now); ok {
				out[i] = v.(*keychain)
				continue
			}
			if v, ok := s.renewed(subjectKey(sub), prefixSubject+sub, now); ok {
				out[i] = v.(*keychain)
				continue
			}
		}
		if missAt == nil {
			missAt = make(map[string][]int)
		}
		if _, dup := missAt[sub]; !dup {
			miss = append(miss, prefixSubject+sub)
		}
		missAt[sub] = append(missAt[sub], i)
	}
	if len(miss) == 0 {
		return out, nil
	}
	items, err := s.store.Get(ctx, miss)
	if err != nil {
		return nil, storeErr("read keychains", err)
	}
	for _, it := range items {
		if !it.Found() {
			s.cache.del(subjectKey(it.Key[len(prefixSubject):])) // an expired entry of a shredded keychain
			continue
		}
		sub := it.Key[len(prefixSubject):]
		kc, err := s.reopenKeychain(it, sub, now)
		if err != nil {
			return nil, err
		}
		for _, i := range missAt[sub] {
			out[i] = kc
		}
		s.cache.put(subjectKey(sub), kc, s.expiry(kc.readAt), it.Writes)
	}
	return out, nil
}

// dropShredded removes what an expired cache entry still holds for a user
// the store reports absent or deleted: the index entry and the keychain it
// pointed to (expired entries are never served, but should not keep opened
// root keys of a shredded user in memory until evicted).
func (s *Service) dropShredded(hash string, now time.Time) {
	if v, ok := s.cache.expired(userKeyHex(hash), now); ok {
		s.forget(hash, v.(string))
	}
}

func (s *Service) forget(hash, subject string) {
	if hash != "" {
		s.cache.del(userKeyHex(hash))
	}
	if subject != "" {
		s.cache.del(subjectKey(subject))
	}
}

// newRoots seals a new root key for every configured category that has no
// root key at or above its current version and is not revoked, and drops
// versions below the minimum. It reports whether row changed.
func (s *Service) newRoots(rowKey string, row *keychainRow, pol *policySet) bool {
	changed := false
	if row.Roots == nil {
		row.Roots = map[string]map[int][]byte{}
	}
	for _, cat := range s.catList {
		if _, rv := row.Revoked[cat]; rv {
			continue
		}
		p := pol.of(cat)
		vers := row.Roots[cat]
		for v := range vers {
			if v < p.min {
				delete(vers, v)
				changed = true
			}
		}
		if maxVersion(vers) >= p.cur {
			continue
		}
		if vers == nil {
			vers = map[int][]byte{}
			row.Roots[cat] = vers
		}
		vers[p.cur] = s.kr.seal(newRootKey(), rowKey, cat, p.cur)
		changed = true
	}
	return changed
}

// needsRoots reports, without allocating, whether newRoots would change
// the keychain.
func (s *Service) needsRoots(kc *keychain, pol *policySet) bool {
	gen := pol.gen
	if gen != 0 && kc.okGen.Load() == gen {
		return false
	}
	for ci, cat := range s.catList {
		c := &kc.cats[ci]
		if c.revoked {
			continue
		}
		p := pol.of(cat)
		if c.oldest != 0 && c.oldest < p.min || c.latest < p.cur {
			return true
		}
	}
	kc.okGen.Store(gen)
	return false
}

func maxVersion(m map[int][]byte) int {
	mx := 0
	for v := range m {
		mx = max(mx, v)
	}
	return mx
}

const maxAttempts = 8

var errContention = fmt.Errorf("%w: too much write contention on one row, retry", ErrUnavailable)

// ensureRoots adds root keys for new versions (lazy rotation), idempotently:
// a compare-and-set on the keychain row; a loser adopts the winner's row.
func (s *Service) ensureRoots(ctx context.Context, kc *keychain, pol *policySet) (*keychain, error) {
	for range maxAttempts {
		if kc.deleted() {
			return kc, nil
		}
		rowKey := prefixSubject + kc.subject
		var row keychainRow // decoded afresh: the update must not touch the cached keychain
		if err := decodeRow(Item{Key: rowKey, Value: kc.raw}, &row); err != nil {
			return nil, err
		}
		if !s.newRoots(rowKey, &row, pol) {
			return kc, nil
		}
		it, err := s.store.Put(ctx, rowKey, encodeRow(row), kc.rev)
		if err != nil && !errors.Is(err, ErrConflict) {
			return nil, storeErr("update keychain", err)
		}
		if !it.Found() {
			return nil, storeErr("update keychain", fmt.Errorf("%w: keychain row vanished", ErrUnavailable))
		}
		nkc, oerr := s.openKeychain(it, kc.subject)
		if oerr != nil {
			return nil, oerr
		}
		s.cache.put(subjectKey(kc.subject), nkc, s.expiry(nkc.readAt), it.Writes)
		if err == nil {
			return nkc, nil
		}
		kc = nkc
	}
	return nil, errContention
}

// maxConcurrentWrites bounds the users one call creates (or updates) at
// once. With 32, a batch of 100 new users on bolt waited for 8 commits in
// a row (`make bench`, path=create: p50 52 ms, p99 104 ms).
const maxConcurrentWrites = 1000

// createUser creates the keychain of user hash: first the keychain row
// under a fresh random subject, then the index row with a compare-and-set
// (rev: the index revision expected, 0 for absent). A loser deletes its
// unpublished keychain row and adopts the winner's.
func (s *Service) createUser(ctx context.Context, hash string, rev uint64, pol *policySet) (*keychain, error) {
	idxKey := prefixUser + hash
	for range maxAttempts {
		sub := newSubject()
		rowKey := prefixSubject + sub
		row := keychainRow{V: rowFormat, UID: hash, Created: s.now().UTC()}
		s.newRoots(rowKey, &row, pol)
		kit, err := s.store.Put(ctx, rowKey, encodeRow(row), 0)
		if errors.Is(err, ErrConflict) {
			continue // subject collision: astronomically unlikely
		}
		if err != nil {
			return nil, storeErr("create keychain", err)
		}
		it, err := s.store.Put(ctx, idxKey, encodeRow(indexRow{V: rowFormat, Subject: sub}), rev)
		if err == nil {
			kc, err := s.openKeychain(kit, sub)
			if err != nil {
				return nil, err
			}
			s.cache.put(userKeyHex(hash), sub, s.expiry(it.ReadAt), it.Writes)
			s.cache.put(subjectKey(sub), kc, s.expiry(kit.ReadAt), kit.Writes)
			return kc, nil
		}
		// Lost (or failed): nobody can know this subject; remove it.
		_ = s.store.Delete(context.WithoutCancel(ctx), rowKey)
		if !errors.Is(err, ErrConflict) {
			return nil, storeErr("create user index", err)
		}
		rev = it.Rev
		if !it.Found() {
			continue
		}
		var ir indexRow
		if err := decodeRow(it, &ir); err != nil {
			return nil, err
		}
		if ir.Deleted != nil {
			if s.opts.AfterDelete == DenyAfterDelete {
				return nil, ErrUserDeleted
			}
			continue
		}
		kcs, err := s.loadKeychains(ctx, []string{ir.Subject}, true)
		if err != nil {
			return nil, err
		}
		kc := kcs[0]
		if kc != nil && !kc.deleted() {
			s.cache.put(userKeyHex(hash), ir.Subject, s.expiry(it.ReadAt), it.Writes)
			return kc, nil
		}
		if s.opts.AfterDelete == DenyAfterDelete {
			return nil, ErrUserDeleted
		}
	}
	return nil, errContention
}
