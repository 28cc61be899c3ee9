package keyservice

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

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
