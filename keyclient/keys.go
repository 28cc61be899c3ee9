package keyclient

// This file holds the consumer-side contract the pipelines code against.
// (Written first by the record/ work so that record compiles; the keyclient
// implementation owns it — change it there, together with its users.)

import (
	"context"
	"errors"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// Keys is the key service as the pipelines see it.
type Keys interface {
	// ForEncrypt returns, per user id (in order), the user's _subject and the
	// current key of each requested category, creating keychains as needed.
	ForEncrypt(ctx context.Context, userIDs, categories []string) ([]UserKeys, error)
	// ForDecrypt returns, per subject (in order), every live key version of
	// each requested category.
	ForDecrypt(ctx context.Context, subjects, categories []string) ([]UserKeys, error)
}

// UserKeys is the answer for one user or subject.
type UserKeys struct {
	UserID  string
	Subject string
	Keys    []fieldcrypt.CategoryKey
	Revoked []string // requested categories revoked for this user: no key for them
	Err     error    // per user: ErrUserDeleted, ErrUnknownSubject; nil when ok
}

// Errors. Per-user errors are permanent; ErrUnavailable is transient (retry).
var (
	ErrUserDeleted    = errors.New("keyclient: user was deleted")
	ErrUnknownSubject = errors.New("keyclient: unknown subject")
	ErrUnavailable    = errors.New("keyclient: key service unavailable")
)
