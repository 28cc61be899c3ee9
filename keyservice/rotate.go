package keyservice

import (
	"context"
	"errors"
)

// Rotation: new key versions of a category and the minimum version served.

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
	return pol.of(category).cur, pol.of(category).min, nil
}
