package keyclient

import (
	"context"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// Keys is what pipelines need from the key service. *Client and *Fake
// implement it.
type Keys interface {
	// ForEncrypt returns, per user id and in order, the current key of each
	// category, creating keychains as needed. A revoked category has no key
	// and is listed in Revoked. A deleted user has Err ErrUserDeleted.
	ForEncrypt(ctx context.Context, userIDs, categories []string) ([]UserKeys, error)
	// ForDecrypt returns, per subject and in order, every live version of each
	// category key. Unknown subjects have Err ErrUnknownSubject, deleted ones
	// ErrUserDeleted.
	ForDecrypt(ctx context.Context, subjects, categories []string) ([]UserKeys, error)
}

// UserKeys is the answer for one user (ForEncrypt) or subject (ForDecrypt).
//
// Keys and Revoked may be shared with the client's cache and with other
// answers: read them, never modify them.
type UserKeys struct {
	UserID  string // the requested user id (ForEncrypt only; never sent back by the service)
	Subject string // the user's opaque _subject
	Keys    []fieldcrypt.CategoryKey
	Revoked []string // requested categories the user revoked
	Err     error    // ErrUserDeleted, ErrUnknownUser, ErrUnknownSubject; nil when Keys are valid
}

// Transport is one way of reaching the key service: each method is one round
// trip carrying a whole batch, answering one UserKeys per id in order. It
// does no caching, batching or retrying; Client does. Whole-call errors are
// the sentinels of this package (ErrUnavailable for transient ones).
type Transport interface {
	GetOrCreate(ctx context.Context, scope string, userIDs, categories []string) ([]UserKeys, error)
	GetBySubject(ctx context.Context, scope string, subjects, categories []string) ([]UserKeys, error)
}

// networked is a Transport that says whether its calls wait on a network
// (RemoteTransport, MultiTransport: yes). Client.Networked reports it.
type networked interface{ Networked() bool }

var (
	_ Keys      = (*Client)(nil)
	_ Keys      = (*Fake)(nil)
	_ Transport = (*Fake)(nil)
	_ Transport = (*RemoteTransport)(nil)
)
