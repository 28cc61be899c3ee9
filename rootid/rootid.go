// Package rootid names an output root: a random id kept in the object
// _ROOT_ID at the top of the root, created by the first writer that asks.
//
// # Behavior
//
// [Get] reads _ROOT_ID, or creates it with 16 random bytes in lowercase hex
// (32 characters, nothing else in the object) when it is absent. Creation
// uses the bucket's create-if-absent semantics: of concurrent creators one
// wins, and every other one reads the winner's id back. [Read] only reads.
//
// The id scopes what must differ between roots that share one key service,
// such as the dead-letter keychains (record.DeadLetterUser), so that
// shredding one root's keys never touches another's. It is not secret and
// not personal.
//
// # Failure modes
//
// An object that is not exactly 32 lowercase hex characters (one trailing
// newline is tolerated, for hand-edited files) is [ErrInvalid]: permanent,
// fix or remove the object. Bucket errors are returned wrapped.
package rootid

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/lockstream/lockstream/blob"
)

// Name is the object that holds a root's id, at the top of the root.
const Name = "_ROOT_ID"

// ErrInvalid is wrapped when _ROOT_ID holds something else than an id.
var ErrInvalid = errors.New("rootid: " + Name + " is not 32 lowercase hex characters")

// Get returns the id of the root b, creating it if the root has none.
func Get(ctx context.Context, b blob.Bucket) (string, error) {
	id, err := Read(ctx, b)
	if !errors.Is(err, blob.ErrNotExist) {
		return id, err
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("rootid: %w", err)
	}
	id = hex.EncodeToString(raw[:])
	err = blob.WriteAll(ctx, b, Name, []byte(id))
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, blob.ErrExist):
		return Read(ctx, b) // another creator won: its id is the root's
	}
	return "", fmt.Errorf("rootid: create %s in %s: %w", Name, b.Root(), err)
}

// Read returns the id of the root b; an error wrapping blob.ErrNotExist
// when the root has none.
func Read(ctx context.Context, b blob.Bucket) (string, error) {
	data, err := blob.ReadAll(ctx, b, Name)
	if err != nil {
		return "", fmt.Errorf("rootid: read %s in %s: %w", Name, b.Root(), err)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	if !valid(data) {
		return "", fmt.Errorf("%w (in %s)", ErrInvalid, b.Root())
	}
	return string(data), nil
}

func valid(id []byte) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
