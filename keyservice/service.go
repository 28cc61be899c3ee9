package keyservice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// DeletePolicy says what GetOrCreate does for a user who was deleted.
type DeletePolicy int

const (
	// DenyAfterDelete (the default): GetOrCreate of a deleted user reports
	// ErrUserDeleted for that user, forever. A late event for a shredded
	// user is dead-lettered instead of silently re-creating the user.
	DenyAfterDelete DeletePolicy = iota
	// NewKeychainAfterDelete: GetOrCreate of a deleted user creates a
	// brand-new keychain with a new _subject. Data written under the old
	// keychain stays unreadable and is not linkable to the new one.
	NewKeychainAfterDelete
)

func (p DeletePolicy) String() string {
	switch p {
	case DenyAfterDelete:
		return "deny"
	case NewKeychainAfterDelete:
		return "new-keychain"
	}
	return fmt.Sprintf("DeletePolicy(%d)", int(p))
}

// DefaultCategories are the categories served when Options.Categories is
// empty: the PII categories of the schemas, plus "payload", which seals the
// payloads of dead-lettered messages (record.PayloadCategory) so that they
// die with the user's keychain too.
var DefaultCategories = []string{"location", "device", "contact", "profile", "demographics", "content", "financial", "health", "payload"}

// Defaults of Options.
const (
	DefaultMaxBatch     = 1000
	DefaultMaxUserIDLen = 256
	DefaultStaleWindow  = 5 * time.Second
	DefaultCacheSize    = 100_000
	MaxScopeLen         = 64
)

// Options configure a Service. Zero values take the defaults.
type Options struct {
	// MasterKey (32 bytes) seals root keys and keys the user-id index.
	MasterKey fieldcrypt.Secret
	// Categories allowed in requests; default DefaultCategories. Names are
	// [a-z0-9_-], at most 64 bytes.
	Categories []string
	// AfterDelete: what GetOrCreate does for a deleted user.
	AfterDelete DeletePolicy
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxBatch bounds the ids of one call (default 1000).
	MaxBatch int
	// MaxUserIDLen bounds a user id in bytes (default 256).
	MaxUserIDLen int
	// StaleWindow bounds how long this Service serves a row it read from
	// the store (index entry, keychain, category policy) before reading it
	// again (default 5 s). See "Deletion and the stale window" in doc.go.
	StaleWindow time.Duration
	// CacheSize is the number of rows kept (decrypted) in process; default
	// 100,000; negative disables the cache.
	CacheSize int
}

// UserKeys is the answer for one requested user or subject.
type UserKeys struct {
	UserID  string // as asked (by-user calls); "" for by-subject calls
	Subject string
	// Keys: by-user, the current version of each requested category (for
	// encryption); by-subject, every live version >= the category's
	// minimum version (for decryption), ascending.
	Keys []fieldcrypt.CategoryKey
	// Revoked lists the requested categories revoked for this user.
	Revoked []string
	// Err: ErrUserDeleted, ErrUnknownUser or ErrUnknownSubject; nil when ok.
	Err error
}

// KeychainInfo describes a keychain for administrators; it never holds key
// bytes.
type KeychainInfo struct {
	Subject    string
	Created    time.Time
	Deleted    bool
	DeletedAt  time.Time
	Categories []CategoryInfo
}

// CategoryInfo is one category of a keychain.
type CategoryInfo struct {
	Category  string
	Versions  []int // versions with a root key, ascending
	Revoked   bool
	RevokedAt time.Time
}

// Service is the key service core. It is safe for concurrent use.
type Service struct {
	store   Store
	opts    Options
	kr      *keyring
	cats    map[string]bool
	catList []string
	catIdx  map[string]int // position in catList
	cache   *lru
	now     func() time.Time
	local   LocalWriter // the store, when it is the only writer of its rows; else nil
}

// New returns a Service over store. It checks the master key against the
// store (a store first opened with another master key fails here with
// ErrSealedRow).
func New(store Store, opts Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("keyservice: nil store")
	}
	kr, err := newKeyring(opts.MasterKey)
	if err != nil {
		return nil, err
	}
	if len(opts.Categories) == 0 {
		opts.Categories = DefaultCategories
	}
	s := &Service{store: store, kr: kr, cats: map[string]bool{}, catIdx: map[string]int{}}
	s.local, _ = store.(LocalWriter)
	for _, c := range opts.Categories {
		if !validName(c) {
			return nil, invalid("category name %q: want 1-64 bytes of [a-z0-9_-]", c)
		}
		if !s.cats[c] {
			s.cats[c] = true
			s.catIdx[c] = len(s.catList)
			s.catList = append(s.catList, c)
		}
	}
	opts.Categories = slices.Clone(s.catList)
	if opts.AfterDelete != DenyAfterDelete && opts.AfterDelete != NewKeychainAfterDelete {
		return nil, invalid("unknown AfterDelete policy %d", int(opts.AfterDelete))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxUserIDLen <= 0 {
		opts.MaxUserIDLen = DefaultMaxUserIDLen
	}
	if opts.StaleWindow <= 0 {
		opts.StaleWindow = DefaultStaleWindow
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	s.opts, s.now = opts, opts.Now
	s.cache = newLRU(opts.CacheSize)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.checkMaster(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Options returns the effective options (defaults filled in).
func (s *Service) Options() Options { o := s.opts; o.Categories = slices.Clone(o.Categories); return o }

// checkMaster writes, or verifies, a value sealed under the master key.
func (s *Service) checkMaster(ctx context.Context) error {
	items, err := s.store.Get(ctx, []string{keyCheck})
	if err != nil {
		return storeErr("check master key", err)
	}
	it := items[0]
	if !it.Found() {
		it, err = s.store.Put(ctx, keyCheck, s.kr.seal(make([]byte, rootKeySize), keyCheck, checkAAD, 1), 0)
		if err != nil && !errors.Is(err, ErrConflict) {
			return storeErr("check master key", err)
		}
	}
	if _, err := s.kr.open(it.Value, keyCheck, checkAAD, 1); err != nil {
		return fmt.Errorf("keyservice: the master key does not match the one this store was created with: %w", ErrSealedRow)
	}
	return nil
}

func validName(c string) bool {
	if c == "" || len(c) > 64 {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

func validScope(scope string) error {
	if scope == "" || len(scope) > MaxScopeLen {
		return invalid("scope must be 1-%d bytes", MaxScopeLen)
	}
	for i := 0; i < len(scope); i++ {
		b := scope[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
			return invalid("scope %q: only [a-z0-9._-] allowed", scope)
		}
	}
	return nil
}

func (s *Service) checkCategory(c string) error {
	if !s.cats[c] {
		return fmt.Errorf("%w: %w %q (configured: %v)", ErrInvalidArgument, ErrUnknownCategory, c, s.catList)
	}
	return nil
}

// checkCategories validates and de-duplicates; empty means all configured.
func (s *Service) checkCategories(cats []string) ([]string, error) {
	if len(cats) == 0 {
		return s.catList, nil
	}
	out := make([]string, 0, len(cats))
	for _, c := range cats {
		if err := s.checkCategory(c); err != nil {
			return nil, err
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (s *Service) checkUserID(i int, id string) error {
	if id == "" {
		return invalid("user id #%d is empty", i)
	}
	if len(id) > s.opts.MaxUserIDLen {
		return invalid("user id #%d is %d bytes, longer than the limit of %d", i, len(id), s.opts.MaxUserIDLen)
	}
	return nil
}

func (s *Service) checkBatch(n int) error {
	if n > s.opts.MaxBatch {
		return invalid("batch of %d ids is over the limit of %d", n, s.opts.MaxBatch)
	}
	return nil
}

// expiry is when a row read from the store at readAt (by the store's wall
// clock) must be read again: StaleWindow after it was read, on this
// Service's clock.
//
// Up to a fifth of the window is taken off at random, so rows read together
// (a warm-up, a burst of new users) do not all expire together and make every
// request of one instant go to the store: that burst was the whole p99 of the
// load benchmark (31 ms at 500 RPC/s with, 3.6 ms without refreshes). The
// bound only gets shorter.
func (s *Service) expiry(readAt time.Time) time.Time {
	age := time.Duration(0)
	if !readAt.IsZero() {
		age = max(0, time.Since(readAt))
	}
	jitter := time.Duration(rand.Int64N(int64(s.opts.StaleWindow)/5 + 1))
	return s.now().Add(s.opts.StaleWindow - age - jitter)
}

// renewed serves an expired cache entry again when the store is the only
// writer of its rows (a LocalWriter) and the entry's row (store key row)
// has not been written since it was read: reading it again would give the
// same bytes. It then counts as read now (a new stale window). On the
// embedded store this takes the refresh reads of unchanged rows out of the
// serving path (at 500 batch RPC/s on 10k users they were a third of the
// key server's garbage). Other stores answer false.
func (s *Service) renewed(ck ckey, row string, now time.Time) (any, bool) {
	if s.local == nil {
		return nil, false
	}
	return s.cache.renew(ck, now, s.local.Writes(row), s.expiry(time.Time{}))
}

// ---- policies ----

type policy struct {
	cur, min int
}

// policyGen numbers each policy set read from the store, so a keychain can
// remember that it already satisfies one (needsRoots).
var policyGen atomic.Uint64

// genKey is not a category name: it holds the generation of a policy map.
const genKey = "\x00gen"

func (s *Service) policies(ctx context.Context) (map[string]policy, error) {
	if v, ok := s.cache.get(policiesKey, s.now()); ok {
		return v.(map[string]policy), nil
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
	out[genKey] = policy{cur: int(policyGen.Add(1))}
	s.cache.put(policiesKey, out, s.expiry(oldest), 0)
	return out, nil
}

// ---- keychains ----

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
func (s *Service) newRoots(rowKey string, row *keychainRow, pol map[string]policy) bool {
	changed := false
	if row.Roots == nil {
		row.Roots = map[string]map[int][]byte{}
	}
	for _, cat := range s.catList {
		if _, rv := row.Revoked[cat]; rv {
			continue
		}
		p := pol[cat]
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
func (s *Service) needsRoots(kc *keychain, pol map[string]policy) bool {
	gen := uint64(pol[genKey].cur)
	if gen != 0 && kc.okGen.Load() == gen {
		return false
	}
	for ci, cat := range s.catList {
		c := &kc.cats[ci]
		if c.revoked {
			continue
		}
		p := pol[cat]
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
func (s *Service) ensureRoots(ctx context.Context, kc *keychain, pol map[string]policy) (*keychain, error) {
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
func (s *Service) createUser(ctx context.Context, hash string, rev uint64, pol map[string]policy) (*keychain, error) {
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

// ---- gets ----

type userState struct {
	sum     [32]byte // HMAC of the user id
	hash    string   // hex of sum: set when the store is read or written
	subject string
	kc      *keychain
	err     error
	// create: the index must be (re)written; createRev is its revision.
	create    bool
	createRev uint64
	// answer, once built (duplicate ids get a copy).
	answer   UserKeys
	answered bool
}

// userStates recycles the per-call state slices of byUser (cleared before
// reuse: no keychain outlives its call through the pool).
var userStates = sync.Pool{New: func() any { return new(callScratch) }}

// callScratch is the per-call state of byUser, reused across calls.
type callScratch struct {
	sts  []userState
	at   []int32
	subs []string
	kcs  []*keychain
}

// idPositions maps user ids to their state in one byUser call; pooled
// (cleared after use) so the warm path does not build a map per request.
var idPositions = sync.Pool{New: func() any { return make(map[string]int32) }}

// GetOrCreate returns the keys of userIDs for categories (empty: every
// configured category), creating keychains for new users. It is idempotent
// under concurrent calls for the same user (one _subject and one root key
// per category and version win; losers adopt them), and a created user is
// readable at once by every Service on the same store.
func (s *Service) GetOrCreate(ctx context.Context, scope string, userIDs, categories []string) ([]UserKeys, error) {
	var a Answer
	err := s.byUser(ctx, scope, userIDs, categories, true, &a)
	return a.Users, err
}

// GetOrCreateInto is GetOrCreate answering in a's buffers, which a server
// reuses from one request to the next (a.Reset): the warm path then
// allocates no result per request. a.Users is the answer; it and the keys
// it holds are valid until a is reset or used again.
func (s *Service) GetOrCreateInto(ctx context.Context, scope string, userIDs, categories []string, a *Answer) error {
	return s.byUser(ctx, scope, userIDs, categories, true, a)
}

// GetByUserInto is GetByUser answering in a's buffers (see GetOrCreateInto).
func (s *Service) GetByUserInto(ctx context.Context, scope string, userIDs, categories []string, a *Answer) error {
	return s.byUser(ctx, scope, userIDs, categories, false, a)
}

// Answer holds the result of a batch lookup in buffers that can be reused
// for the next one.
type Answer struct {
	Users []UserKeys // one per requested id, in order
	// Writes is the number of users whose keychain the call wrote to the
	// store (created, or given the root key of a new version): a call with
	// writes waits for durable store writes, one without answers from
	// caches and reads.
	Writes int
	keys   []fieldcrypt.CategoryKey
}

// Reset empties a for reuse, dropping its references to keys and ids.
func (a *Answer) Reset() {
	clear(a.Users[:cap(a.Users)])
	clear(a.keys[:cap(a.keys)])
	a.Users, a.keys, a.Writes = a.Users[:0], a.keys[:0], 0
}

// GetByUser is GetOrCreate without creating users: a user without keychain
// is reported as ErrUnknownUser. (Root keys of a rotated category are still
// created lazily for existing users.)
func (s *Service) GetByUser(ctx context.Context, scope string, userIDs, categories []string) ([]UserKeys, error) {
	var a Answer
	err := s.byUser(ctx, scope, userIDs, categories, false, &a)
	return a.Users, err
}

// byUser answers in a.Users (set only on success).
func (s *Service) byUser(ctx context.Context, scope string, userIDs, categories []string, create bool, a *Answer) error {
	if err := validScope(scope); err != nil {
		return err
	}
	if err := s.checkBatch(len(userIDs)); err != nil {
		return err
	}
	cats, err := s.checkCategories(categories)
	if err != nil {
		return err
	}
	for i, id := range userIDs {
		if err := s.checkUserID(i, id); err != nil {
			return err
		}
	}
	pol, err := s.policies(ctx)
	if err != nil {
		return err
	}
	// One state per distinct id; at[i] is the state of userIDs[i].
	sc := userStates.Get().(*callScratch)
	sts := slices.Grow(sc.sts[:0], len(userIDs))
	at := slices.Grow(sc.at[:0], len(userIDs))[:len(userIDs)]
	subs := sc.subs[:0]
	defer func() {
		clear(sts) // the rest of the array is still zero from earlier calls
		clear(subs)
		clear(sc.kcs[:cap(sc.kcs)])
		sc.sts, sc.at, sc.subs, sc.kcs = sts[:0], at[:0], subs[:0], sc.kcs[:0]
		userStates.Put(sc)
	}()
	pos := idPositions.Get().(map[string]int32)
	for i, id := range userIDs {
		j, ok := pos[id]
		if !ok {
			j = int32(len(sts))
			pos[id] = j
			sts = append(sts, userState{sum: s.kr.userSum(id)})
		}
		at[i] = j
	}
	clear(pos)
	idPositions.Put(pos)

	var miss []string
	now := s.now()
	for i := range sts {
		st := &sts[i]
		if v, ok := s.cache.get(userKey(st.sum), now); ok {
			st.subject = v.(string)
			continue
		}
		st.hash = hex.EncodeToString(st.sum[:])
		row := prefixUser + st.hash
		if v, ok := s.renewed(userKey(st.sum), row, now); ok {
			st.subject, st.hash = v.(string), ""
			continue
		}
		miss = append(miss, row)
	}
	if len(miss) > 0 {
		items, err := s.store.Get(ctx, miss)
		if err != nil {
			return storeErr("read user index", err)
		}
		byHash := make(map[string]Item, len(items))
		for _, it := range items {
			byHash[it.Key[len(prefixUser):]] = it
		}
		for i := range sts {
			st := &sts[i]
			if st.hash == "" {
				continue // from the cache
			}
			it, ok := byHash[st.hash]
			if !ok {
				continue
			}
			switch {
			case !it.Found():
				s.dropShredded(st.hash, now)
				if create {
					st.create = true
				} else {
					st.err = ErrUnknownUser
				}
			default:
				var ir indexRow
				if err := decodeRow(it, &ir); err != nil {
					return err
				}
				if ir.Deleted != nil {
					s.dropShredded(st.hash, now)
					if create && s.opts.AfterDelete == NewKeychainAfterDelete {
						st.create, st.createRev = true, it.Rev
					} else {
						st.err = ErrUserDeleted
					}
					continue
				}
				st.subject = ir.Subject
				s.cache.put(userKey(st.sum), ir.Subject, s.expiry(it.ReadAt), it.Writes)
			}
		}
	}
	for i := range sts {
		if sts[i].subject != "" {
			subs = append(subs, sts[i].subject)
		}
	}
	if len(subs) > 0 {
		kcs, err := s.loadKeychainsInto(ctx, subs, false, sc.kcs)
		sc.kcs = kcs
		if err != nil {
			return err
		}
		for i := range sts {
			st := &sts[i]
			if st.subject == "" {
				continue
			}
			kc := kcs[0]
			kcs = kcs[1:]
			switch {
			case kc != nil && !kc.deleted():
				st.kc = kc
			case create && s.opts.AfterDelete == NewKeychainAfterDelete:
				// A stale mapping to a shredded keychain: createUser's
				// compare-and-set finds the current index revision.
				st.create, st.createRev = true, 0
			default:
				st.err = ErrUserDeleted
			}
		}
	}
	// Users needing no write never start a goroutine (nor an errgroup):
	// the warm path is allocation-light.
	var g *errgroup.Group
	var gctx context.Context
	writes := 0
	for i := range sts {
		st := &sts[i]
		if st.err != nil || !st.create && !s.needsRoots(st.kc, pol) {
			continue
		}
		writes++
		if g == nil {
			// Every write of the call at once: the store commits
			// concurrent writes together (bolt's batch, one fsync), so a
			// batch of new users costs about two commits, not two per 32
			// users.
			g, gctx = errgroup.WithContext(ctx)
			g.SetLimit(maxConcurrentWrites)
		}
		if st.hash == "" {
			st.hash = hex.EncodeToString(st.sum[:])
		}
		g.Go(func() error {
			var err error
			if st.create {
				st.kc, err = s.createUser(gctx, st.hash, st.createRev, pol)
			} else {
				st.kc, err = s.ensureRoots(gctx, st.kc, pol)
			}
			if errors.Is(err, ErrUserDeleted) {
				st.err, st.kc = ErrUserDeleted, nil
				return nil
			}
			if err == nil && st.kc.deleted() {
				st.err, st.kc = ErrUserDeleted, nil
			}
			return err
		})
	}
	if g != nil {
		if err := g.Wait(); err != nil {
			return err
		}
	}
	// Position and current version of each category, once per call.
	var buf [32]int
	ci, cur := buf[:0:16], buf[16:16]
	for _, cat := range cats {
		ci, cur = append(ci, s.catIdx[cat]), append(cur, pol[cat].cur)
	}
	// One backing array for every key of the answer (a's, when large
	// enough: a reused Answer allocates nothing here).
	keys := slices.Grow(a.keys[:0], len(sts)*len(cats))
	out := slices.Grow(a.Users[:0], len(userIDs))[:len(userIDs)]
	for i, id := range userIDs {
		st := &sts[at[i]]
		if !st.answered {
			st.answer, err = s.currentKeys(scope, st, cats, ci, cur, &keys)
			if err != nil {
				return err
			}
			st.answered = true
			out[i] = st.answer
		} else {
			out[i] = st.answer
			out[i].Keys = slices.Clone(st.answer.Keys)
			out[i].Revoked = slices.Clone(st.answer.Revoked)
		}
		out[i].UserID = id
	}
	a.Users, a.keys, a.Writes = out, keys, writes
	return nil
}

// currentKeys answers st with the current version of each category,
// appending the keys to *keys. ci and cur are, aligned with cats, the
// categories' positions in s.catList and their current versions.
func (s *Service) currentKeys(scope string, st *userState, cats []string, ci, cur []int, keys *[]fieldcrypt.CategoryKey) (UserKeys, error) {
	if st.err != nil {
		return UserKeys{Err: st.err}, nil
	}
	kc := st.kc
	start := len(*keys)
	uk := UserKeys{Subject: kc.subject}
	for i, cat := range cats {
		c := &kc.cats[ci[i]]
		if c.revoked {
			uk.Revoked = append(uk.Revoked, cat)
			continue
		}
		v := c.latest
		if v == 0 || v < cur[i] {
			return UserKeys{}, fmt.Errorf("keyservice: keychain lacks category %s version %d after update: %w", cat, cur[i], ErrUnavailable)
		}
		k, err := kc.key(scope, ci[i], cat, v)
		if err != nil {
			return UserKeys{}, err
		}
		*keys = append(*keys, fieldcrypt.CategoryKey{Subject: kc.subject, Category: cat, Version: v, Secret: k})
	}
	end := len(*keys)
	uk.Keys = (*keys)[start:end:end] // full slice: a caller's append cannot overwrite the next user's keys
	return uk, nil
}

// GetBySubject returns, for decryption, every live key version (>= the
// category's minimum) of subjects for categories (empty: all configured).
// It never creates anything.
func (s *Service) GetBySubject(ctx context.Context, scope string, subjects, categories []string) ([]UserKeys, error) {
	if err := validScope(scope); err != nil {
		return nil, err
	}
	if err := s.checkBatch(len(subjects)); err != nil {
		return nil, err
	}
	cats, err := s.checkCategories(categories)
	if err != nil {
		return nil, err
	}
	for i, sub := range subjects {
		if !ValidSubject(sub) {
			return nil, invalid("subject #%d is not a _subject (want s_ + 26 base32 characters)", i)
		}
	}
	pol, err := s.policies(ctx)
	if err != nil {
		return nil, err
	}
	kcs, err := s.loadKeychains(ctx, subjects, false)
	if err != nil {
		return nil, err
	}
	out := make([]UserKeys, len(subjects))
	for i, sub := range subjects {
		kc := kcs[i]
		uk := UserKeys{Subject: sub}
		switch {
		case kc == nil:
			uk.Err = ErrUnknownSubject
		case kc.deleted():
			uk.Err = ErrUserDeleted
		default:
			for _, cat := range cats {
				ci := s.catIdx[cat]
				if kc.cats[ci].revoked {
					uk.Revoked = append(uk.Revoked, cat)
					continue
				}
				for _, r := range kc.roots {
					if r.cat != ci || r.version < pol[cat].min {
						continue
					}
					k, err := kc.key(scope, ci, cat, r.version)
					if err != nil {
						return nil, err
					}
					uk.Keys = append(uk.Keys, fieldcrypt.CategoryKey{Subject: sub, Category: cat, Version: r.version, Secret: k})
				}
			}
		}
		out[i] = uk
	}
	return out, nil
}

// ---- deletion, revocation ----

// DeleteUser shreds the user's keychain: its row is replaced by a tombstone
// without any root key, and the user's index row by a tombstone holding
// nothing but its key (the HMAC of the user id), so the user stays deleted.
// Deleting an unknown user leaves such a tombstone too (so a late event does
// not create the user under DenyAfterDelete); deleting twice is a no-op.
func (s *Service) DeleteUser(ctx context.Context, userID string) error {
	if err := s.checkUserID(0, userID); err != nil {
		return err
	}
	hash := s.kr.userHash(userID)
	idxKey := prefixUser + hash
	tomb := func() []byte { t := s.now().UTC(); return encodeRow(indexRow{V: rowFormat, Deleted: &t}) }
	for range maxAttempts {
		items, err := s.store.Get(ctx, []string{idxKey})
		if err != nil {
			return storeErr("delete user", err)
		}
		it := items[0]
		var ir indexRow
		if it.Found() {
			if err := decodeRow(it, &ir); err != nil {
				return err
			}
			if ir.Deleted != nil {
				s.forget(hash, "")
				return nil
			}
			if _, err := s.shredSubject(ctx, ir.Subject); err != nil && !errors.Is(err, ErrUnknownSubject) {
				return err
			}
		}
		_, err = s.store.Put(ctx, idxKey, tomb(), it.Rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		s.forget(hash, ir.Subject)
		return storeErr("delete user", err)
	}
	return errContention
}

// shredSubject replaces a keychain row by a tombstone and returns the user
// hash it belonged to ("" if it was already shredded).
func (s *Service) shredSubject(ctx context.Context, subject string) (string, error) {
	rowKey := prefixSubject + subject
	defer s.forget("", subject)
	for range maxAttempts {
		items, err := s.store.Get(ctx, []string{rowKey})
		if err != nil {
			return "", storeErr("delete keychain", err)
		}
		it := items[0]
		if !it.Found() {
			return "", ErrUnknownSubject
		}
		var row keychainRow
		if err := decodeRow(it, &row); err != nil {
			return "", err
		}
		if row.Deleted != nil {
			return "", nil
		}
		t := s.now().UTC()
		_, err = s.store.Put(ctx, rowKey, encodeRow(keychainRow{V: rowFormat, Deleted: &t}), it.Rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return "", storeErr("delete keychain", err)
		}
		return row.UID, nil
	}
	return "", errContention
}

// DeleteSubject shreds the keychain of subject and tombstones its user's
// index row, exactly like DeleteUser. ErrUnknownSubject if no keychain ever
// had that subject; deleting twice is a no-op.
func (s *Service) DeleteSubject(ctx context.Context, subject string) error {
	if !ValidSubject(subject) {
		return invalid("not a _subject (want s_ + 26 base32 characters)")
	}
	hash, err := s.shredSubject(ctx, subject)
	if err != nil || hash == "" {
		return err
	}
	idxKey := prefixUser + hash
	defer s.forget(hash, "")
	for range maxAttempts {
		items, err := s.store.Get(ctx, []string{idxKey})
		if err != nil {
			return storeErr("delete user index", err)
		}
		it := items[0]
		var ir indexRow
		if it.Found() {
			if err := decodeRow(it, &ir); err != nil {
				return err
			}
			if ir.Subject != subject {
				return nil // already a tombstone, or a newer keychain (NewKeychainAfterDelete)
			}
		}
		t := s.now().UTC()
		_, err = s.store.Put(ctx, idxKey, encodeRow(indexRow{V: rowFormat, Deleted: &t}), it.Rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return storeErr("delete user index", err)
	}
	return errContention
}

// Revoke destroys the user's root keys of category (opt-out). Later gets
// list the category in UserKeys.Revoked and return no key for it; data
// encrypted under it is unreadable. ErrUnknownUser / ErrUserDeleted as for
// gets; revoking twice is a no-op.
func (s *Service) Revoke(ctx context.Context, userID, category string) error {
	if err := s.checkUserID(0, userID); err != nil {
		return err
	}
	if err := s.checkCategory(category); err != nil {
		return err
	}
	hash := s.kr.userHash(userID)
	items, err := s.store.Get(ctx, []string{prefixUser + hash})
	if err != nil {
		return storeErr("revoke", err)
	}
	it := items[0]
	if !it.Found() {
		return ErrUnknownUser
	}
	var ir indexRow
	if err := decodeRow(it, &ir); err != nil {
		return err
	}
	if ir.Deleted != nil {
		return ErrUserDeleted
	}
	return s.revokeSubject(ctx, ir.Subject, category)
}

// RevokeSubject is Revoke by _subject.
func (s *Service) RevokeSubject(ctx context.Context, subject, category string) error {
	if !ValidSubject(subject) {
		return invalid("not a _subject (want s_ + 26 base32 characters)")
	}
	if err := s.checkCategory(category); err != nil {
		return err
	}
	return s.revokeSubject(ctx, subject, category)
}

func (s *Service) revokeSubject(ctx context.Context, subject, category string) error {
	rowKey := prefixSubject + subject
	defer s.forget("", subject)
	for range maxAttempts {
		items, err := s.store.Get(ctx, []string{rowKey})
		if err != nil {
			return storeErr("revoke", err)
		}
		it := items[0]
		if !it.Found() {
			return ErrUnknownSubject
		}
		var row keychainRow
		if err := decodeRow(it, &row); err != nil {
			return err
		}
		if row.Deleted != nil {
			return ErrUserDeleted
		}
		if _, done := row.Revoked[category]; done && row.Roots[category] == nil {
			return nil
		}
		delete(row.Roots, category)
		if row.Revoked == nil {
			row.Revoked = map[string]time.Time{}
		}
		row.Revoked[category] = s.now().UTC()
		_, err = s.store.Put(ctx, rowKey, encodeRow(row), it.Rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return storeErr("revoke", err)
	}
	return errContention
}

// ---- rotation ----

func (s *Service) updatePolicy(ctx context.Context, category string, f func(p *policyRow) error) (policyRow, error) {
	if err := s.checkCategory(category); err != nil {
		return policyRow{}, err
	}
	key := prefixPolicy + category
	defer s.cache.del(policiesKey)
	for range maxAttempts {
		items, err := s.store.Get(ctx, []string{key})
		if err != nil {
			return policyRow{}, storeErr("update policy", err)
		}
		it := items[0]
		p := policyRow{V: rowFormat, Current: 1, Min: 1}
		if it.Found() {
			if err := decodeRow(it, &p); err != nil {
				return policyRow{}, err
			}
		}
		if err := f(&p); err != nil {
			return policyRow{}, err
		}
		_, err = s.store.Put(ctx, key, encodeRow(p), it.Rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return policyRow{}, storeErr("update policy", err)
		}
		return p, nil
	}
	return policyRow{}, errContention
}

// Rotate makes a new version of category current, for all users, and
// returns it. Rotation is lazy: a keychain gets its root key for the new
// version on its next by-user get (idempotently). Other Services on the same
// store see the new version within their stale window.
func (s *Service) Rotate(ctx context.Context, category string) (int, error) {
	p, err := s.updatePolicy(ctx, category, func(p *policyRow) error { p.Current++; return nil })
	return p.Current, err
}

// SetMinVersion stops serving versions of category below min (1 <= min <=
// current); their root keys are destroyed when a keychain is next updated.
func (s *Service) SetMinVersion(ctx context.Context, category string, min int) error {
	_, err := s.updatePolicy(ctx, category, func(p *policyRow) error {
		if min < 1 || min > p.Current {
			return invalid("min version %d of %s: want 1..%d (the current version)", min, category, p.Current)
		}
		p.Min = min
		return nil
	})
	return err
}

// CategoryVersions reports the current and minimum version of category.
func (s *Service) CategoryVersions(ctx context.Context, category string) (current, min int, err error) {
	if err := s.checkCategory(category); err != nil {
		return 0, 0, err
	}
	pol, err := s.policies(ctx)
	if err != nil {
		return 0, 0, err
	}
	return pol[category].cur, pol[category].min, nil
}

// ---- admin ----

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
	// used, by reason (indexed like RejectReasons; see MemcachedStore).
	MemcachedRejected [numRejectReasons]uint64
	Memcached         bool // the store has a memcached tier
}

// CacheStats reads the cache counters.
func (s *Service) CacheStats() CacheStats {
	var st CacheStats
	if s.cache != nil {
		st.ProcessHits, st.ProcessMisses = s.cache.hits.Load(), s.cache.misses.Load()
		st.ProcessRenewed = s.cache.renewals.Load()
		st.ProcessEntries = s.cache.len()
	}
	if m, ok := s.store.(interface {
		Stats() (hits, misses, errs uint64)
	}); ok {
		st.Memcached = true
		st.MemcachedHits, st.MemcachedMisses, st.MemcachedErrors = m.Stats()
	}
	if m, ok := s.store.(interface {
		Rejected() [numRejectReasons]uint64
	}); ok {
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
