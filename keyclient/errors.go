package keyclient

import (
	"context"
	"errors"
)

// Per-user outcomes (in UserKeys.Err). They are permanent: retrying does not
// change them.
var (
	// ErrUserDeleted: the user's keychain was deleted (shredded). A late event
	// for the user must be dropped, not encrypted under a new keychain.
	ErrUserDeleted = errors.New("keyclient: user keychain was deleted")
	// ErrUnknownUser: no keychain for the user (lookups that do not create).
	ErrUnknownUser = errors.New("keyclient: unknown user")
	// ErrUnknownSubject: no keychain has this _subject.
	ErrUnknownSubject = errors.New("keyclient: unknown subject")
)

// Whole-call errors.
var (
	// ErrUnavailable is transient: the key service did not answer (down,
	// overloaded, deadline exceeded) within the retry budget. Hold the work
	// and retry later.
	ErrUnavailable = errors.New("keyclient: key service unavailable")
	// ErrUnauthenticated is permanent: the service secret was refused.
	ErrUnauthenticated = errors.New("keyclient: key service refused the credentials")
	// ErrPermissionDenied is permanent: this service may not use that scope,
	// category or operation.
	ErrPermissionDenied = errors.New("keyclient: permission denied")
	// ErrInvalidArgument is permanent: the request itself is wrong (empty or
	// oversized ids, unknown category, batch too large).
	ErrInvalidArgument = errors.New("keyclient: invalid argument")
	// ErrInternal is a server bug or corruption; treated as permanent.
	ErrInternal = errors.New("keyclient: key service internal error")
	// ErrConfig is permanent: the key service address or the client's
	// setup is wrong (an address that does not parse, an unknown scheme, a
	// TLS certificate the client does not trust, https to a plain-HTTP
	// server). Fix the configuration; retrying does not help.
	ErrConfig = errors.New("keyclient: key service configuration")
)

// IsTransient reports whether err may succeed when retried later:
// ErrUnavailable and deadline errors.
func IsTransient(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// unavailable wraps cause (e.g. context.DeadlineExceeded) under ErrUnavailable.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string {
	if e.cause == nil {
		return ErrUnavailable.Error()
	}
	return ErrUnavailable.Error() + ": " + e.cause.Error()
}
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }

// Unavailable returns an error that is ErrUnavailable and also cause, for
// transports and fakes.
func Unavailable(cause error) error { return &unavailableError{cause: cause} }
