package keyservice

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// Gets: get-or-create by user id, get by user id, get by subject.

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
		ci, cur = append(ci, s.catIdx[cat]), append(cur, pol.of(cat).cur)
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
					if r.cat != ci || r.version < pol.of(cat).min {
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
