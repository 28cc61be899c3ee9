package keyservice

import (
	"context"
	"errors"
	"time"
)

// Deletion and revocation: shredding a user's or subject's keychain, and
// revoking one category of it.

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
