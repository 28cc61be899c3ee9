package keyservice

import (
	"context"
	"errors"
	"fmt"
)

// Errors returned by [Service]. Per-user outcomes of batch calls are reported
// in [UserKeys.Err]; the others fail the whole call. None of them ever
// carries a user id, a key or key bytes.
var (
	// ErrUserDeleted: the user (or subject) was shredded and stays deleted.
	// Permanent.
	ErrUserDeleted = errors.New("keyservice: user deleted")
	// ErrUnknownUser: no keychain exists for the user id. Permanent until
	// the user is created by GetOrCreate.
	ErrUnknownUser = errors.New("keyservice: unknown user")
	// ErrUnknownSubject: no keychain was ever created with that _subject.
	ErrUnknownSubject = errors.New("keyservice: unknown subject")
	// ErrCategoryRevoked: the category was revoked for the user (opt-out).
	// Batch gets report revocations in UserKeys.Revoked instead.
	ErrCategoryRevoked = errors.New("keyservice: category revoked")
	// ErrUnknownCategory: the category is not configured. Calls that name
	// an unknown category fail with an error matching both this and
	// ErrInvalidArgument.
	ErrUnknownCategory = errors.New("keyservice: unknown category")
	// ErrInvalidArgument: the request is malformed (bad scope, empty or
	// oversized id, batch over the limit, …). Permanent: do not retry.
	ErrInvalidArgument = errors.New("keyservice: invalid argument")
	// ErrUnavailable: the store failed transiently or the deadline passed.
	// The call may be retried (with backoff) by the client; the service
	// itself never retries.
	ErrUnavailable = errors.New("keyservice: store unavailable")
	// ErrSealedRow: a stored root key does not open under the master key —
	// the wrong master key is configured, or the row was tampered with or
	// moved. Permanent.
	ErrSealedRow = errors.New("keyservice: stored root key does not open under the master key (wrong master key, or tampered/moved row)")
	// ErrConflict is returned by [Store.Put] when the stored revision is not
	// the expected one; the Item returned with it is the current one.
	ErrConflict = errors.New("keyservice: store revision conflict")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

// storeErr wraps a store error for callers: context and transient failures
// become ErrUnavailable; ErrSealedRow and friends pass through.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrSealedRow) {
		return fmt.Errorf("keyservice: %s: %w", op, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("keyservice: %s: %w (%w)", op, ErrUnavailable, err)
	}
	return fmt.Errorf("keyservice: %s: %w", op, err)
}
