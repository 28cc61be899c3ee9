package fieldcrypt

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// CategoryKeySize is the size of the key material of a category key.
const CategoryKeySize = 32

const (
	infoGCM = "lockstream/fieldcrypt/v1/aes256-gcm"
	infoSIV = "lockstream/fieldcrypt/v1/aes256-siv"
)

// ErrKeySize is returned for key material of the wrong length.
var ErrKeySize = errors.New("fieldcrypt: category key must be 32 bytes")

// Secret is key material. Its printed forms are redacted; the bytes are
// reachable only through Expose, which key stores and transports call.
type Secret struct{ b []byte }

// NewSecret copies b into a Secret.
func NewSecret(b []byte) Secret { return Secret{b: append([]byte(nil), b...)} }

// SecretOf wraps b as a Secret without copying it: for key caches that
// carve the secrets of one answer from one allocation. b must not be
// written afterwards.
func SecretOf(b []byte) Secret { return Secret{b: b} }

// Expose returns the key bytes. Only key stores, key transport and the
// insecurekeyset package may call it; never log or return what it gives.
func (s Secret) Expose() []byte { return s.b }

// Len is the number of key bytes.
func (s Secret) Len() int { return len(s.b) }

// IsZero reports whether s holds no material.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Equal compares two secrets in constant time for equal lengths.
func (s Secret) Equal(o Secret) bool {
	if len(s.b) != len(o.b) {
		return false
	}
	var v byte
	for i := range s.b {
		v |= s.b[i] ^ o.b[i]
	}
	return v == 0
}

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s *Secret) UnmarshalJSON([]byte) error {
	return errors.New("fieldcrypt: a Secret cannot be read from JSON")
}
func (s *Secret) UnmarshalText([]byte) error {
	return errors.New("fieldcrypt: a Secret cannot be read from text")
}

// CategoryKey is the key of one (user, category, version) as the key service
// hands it to one service scope.
type CategoryKey struct {
	Subject  string // the user's opaque _subject
	Category string // PII category, e.g. "contact"
	Version  int    // >= 1; also the Tink key id of its ciphertexts
	Secret   Secret // CategoryKeySize bytes

	// derived points at the per-algorithm keys derived from Secret, when
	// whoever holds the key derived them (DeriveKey): a Cache then answers
	// without a lookup or HKDF. Key caches derive once, when they store a
	// key, and every copy they hand out points at the same, never written
	// again.
	derived *Derived
}

// Derived is the per-algorithm keys of one category key (HKDF outputs: 32
// bytes for AES-256-GCM, 64 for AES-SIV): a value with no pointer, for a
// key cache to keep beside the secret. Its printed forms are redacted.
type Derived struct {
	gcm [32]byte
	siv [64]byte
}

func (Derived) String() string             { return redacted }
func (Derived) GoString() string           { return redacted }
func (Derived) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// DeriveKey derives the per-algorithm keys of k (one HKDF-Extract, then
// both Expands through one HMAC keyed with the pseudo-random key), for a
// key cache to keep beside the secret and give back with WithDerived.
// Never log or return what it gives.
func DeriveKey(k CategoryKey) (Derived, error) {
	prk, err := extract(k)
	if err != nil {
		return Derived{}, err
	}
	var d Derived
	expand(hmac.New(sha256.New, prk.b), d.gcm[:], infoGCM, d.siv[:], infoSIV)
	clear(prk.b)
	return d, nil
}

// expand is RFC 5869's HKDF-Expand of the key h is keyed with, into out
// for info and into out2 for info2 (crypto/hkdf.Expand keys an HMAC per
// call; the two outputs share one here). Outputs are at most 255 blocks.
func expand(h hash.Hash, out []byte, info string, out2 []byte, info2 string) {
	// One buffer for what is hashed (what goes through the hash.Hash
	// interface escapes: one allocation, not one per write): T(i-1) at its
	// start, then info and the counter; T(i) is summed over its start.
	buf := make([]byte, 0, sha256.Size+max(len(info), len(info2))+1)
	one := func(dst []byte, info string) {
		n := 0 // T(0) is empty
		for i := byte(1); len(dst) > 0; i++ {
			h.Reset()
			h.Write(append(append(buf[:n], info...), i))
			n = len(h.Sum(buf[:0]))
			dst = dst[copy(dst, buf[:n]):]
		}
	}
	one(out, info)
	one(out2, info2)
	clear(buf[:cap(buf)])
}

// WithDerived returns k carrying d, which must be what DeriveKey gave for
// the same secret (a key cache stores both and returns them together; a
// wrong one would seal values nobody can open), and must not be written
// afterwards: copies of k share it.
func (k CategoryKey) WithDerived(d *Derived) CategoryKey {
	k.derived = d
	return k
}

// Derived returns the derived keys k carries (WithDerived), nil if none.
// They are shared: never write them.
func (k CategoryKey) Derived() *Derived { return k.derived }

// GoString names the key without its material (%#v).
func (k CategoryKey) GoString() string { return "fieldcrypt.CategoryKey{" + k.String() + "}" }

// Validate checks the fields a cipher depends on.
func (k CategoryKey) Validate() error {
	if k.Secret.Len() != CategoryKeySize {
		return ErrKeySize
	}
	if k.Version < 1 || k.Version > 1<<31-1 {
		return fmt.Errorf("fieldcrypt: key version %d out of range", k.Version)
	}
	if k.Subject == "" || k.Category == "" {
		return errors.New("fieldcrypt: category key without subject or category")
	}
	return nil
}

// String names the key without its material.
func (k CategoryKey) String() string {
	return fmt.Sprintf("%s/%s/v%d", k.Subject, k.Category, k.Version)
}

// AlgorithmKeys derives the per-algorithm keys of a category key:
// 32 bytes for AES-256-GCM and 64 bytes for AES-SIV (see the package doc).
func AlgorithmKeys(k CategoryKey) (gcm, siv Secret, err error) {
	d, err := DeriveKey(k)
	if err != nil {
		return Secret{}, Secret{}, err
	}
	return NewSecret(d.gcm[:]), NewSecret(d.siv[:]), nil
}

// extract is the HKDF-Extract step (SHA-256, no salt) shared by both
// algorithm keys: HKDF(secret, info) = Expand(Extract(secret), info).
// Extract is HMAC keyed with the salt, and without a salt that key is
// HashLen zero bytes for every category key (RFC 5869 section 2.2), so
// the HMAC states come from a pool, their pads hashed once, rather than
// built per key as hkdf.Extract does: NewCipher 1.57 -> 1.24 µs and 21 ->
// 14 allocations (ingest builds ~250k ciphers per million events).
func extract(k CategoryKey) (prk Secret, err error) {
	if err := k.Validate(); err != nil {
		return Secret{}, err
	}
	h := extractors.Get().(hash.Hash)
	h.Write(k.Secret.b)
	b := h.Sum(make([]byte, 0, sha256.Size))
	h.Reset() // back in the pool holding nothing of the key
	extractors.Put(h)
	return Secret{b: b}, nil
}

var extractors = sync.Pool{New: func() any { return hmac.New(sha256.New, make([]byte, sha256.Size)) }}
