// Package keyclienttest has key sources for tests and benchmarks that are
// not a key service: [Revoked], under which nothing is ever sealed.
package keyclienttest

import (
	"context"
	"encoding/hex"
	"hash/fnv"

	"github.com/lockstream/lockstream/keyclient"
)

// Revoked is a key source (keyclient.Keys) under which every user has
// revoked every category, at no cost of its own: an anonymizer then
// parses, validates, encodes and writes every event as usual, each PII
// field null and _subject the user's, with no key looked up, cached or
// derived and nothing sealed (rejected payloads are dropped, not sealed);
// a view reads and writes every record with nothing opened. It is the
// "no-crypto" floor the benchmarks measure keys and encryption against.
type Revoked struct{}

var _ keyclient.Keys = Revoked{}

// ForEncrypt answers each user with a subject of the usual length ("s_"
// and 32 hex digits, a hash of the user id) and every category revoked.
func (Revoked) ForEncrypt(_ context.Context, userIDs, categories []string) ([]keyclient.UserKeys, error) {
	out := make([]keyclient.UserKeys, len(userIDs))
	for i, id := range userIDs {
		h := fnv.New128a()
		h.Write([]byte(id))
		out[i] = keyclient.UserKeys{UserID: id, Subject: "s_" + hex.EncodeToString(h.Sum(nil)), Revoked: categories}
	}
	return out, nil
}

// ForDecrypt answers every subject as having revoked every category.
func (Revoked) ForDecrypt(_ context.Context, subjects, categories []string) ([]keyclient.UserKeys, error) {
	out := make([]keyclient.UserKeys, len(subjects))
	for i, s := range subjects {
		out[i] = keyclient.UserKeys{Subject: s, Revoked: categories}
	}
	return out, nil
}
