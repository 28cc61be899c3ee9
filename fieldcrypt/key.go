package fieldcrypt

import (
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
// bytes for AES-256-GCM, then 64 for AES-SIV, or 64 zero bytes when only
// the AES-GCM key was derived: DeriveGCMKey): a value with no pointer, for
// a key cache to keep beside the secret. Its printed forms are redacted.
type Derived struct {
	b [DerivedSize]byte
}

// DerivedSize is the size of a Derived: what a key cache that keeps keys
// in memory of its own stores (Expose) beside each secret. DerivedGCMSize
// is its first bytes, the AES-GCM key: all a key cache needs to keep of a
// Derived without an AES-SIV key (HasSIV), the rest being zero.
const (
	DerivedSize    = DerivedGCMSize + 64
	DerivedGCMSize = 32
)

func (d *Derived) gcm() [32]byte { return [32]byte(d.b[:DerivedGCMSize]) }
func (d *Derived) siv() [64]byte { return [64]byte(d.b[DerivedGCMSize:]) }

// HasSIV reports whether d holds an AES-SIV key: HKDF gives 64 zero bytes
// with probability 2⁻⁵¹², so zero bytes are DeriveGCMKey's "not derived".
func (d *Derived) HasSIV() bool { return d.siv() != [64]byte{} }

// Expose returns the bytes of d, for a key cache that keeps derived keys in
// memory of its own to copy them out and back in (a copy of what DeriveKey
// gave is as good as it). Only key caches may call it; never log or return
// what it gives.
func (d *Derived) Expose() []byte { return d.b[:] }

func (Derived) String() string             { return redacted }
func (Derived) GoString() string           { return redacted }
func (Derived) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// DeriveKey derives the per-algorithm keys of k (HKDF-SHA256: one
// Extract, then both Expands under the one pseudo-random key), for a key
// cache to keep beside the secret and give back with WithDerived. It
// allocates nothing: the HMAC states come from a pool (deriver). Never log
// or return what it gives.
func DeriveKey(k CategoryKey) (Derived, error) { return deriveKey(k, true) }

// DeriveGCMKey is DeriveKey without the AES-SIV key, for a key no
// deterministic field is sealed or opened with: HKDF-Expand of the 64
// bytes of AES-SIV is 5 of its 11 SHA-256 blocks. A Cache asked for a
// deterministic cipher of a key carrying such a Derived derives the whole
// of it (and caches it) instead.
func DeriveGCMKey(k CategoryKey) (Derived, error) { return deriveKey(k, false) }

func deriveKey(k CategoryKey, siv bool) (Derived, error) {
	if err := k.Validate(); err != nil {
		return Derived{}, err
	}
	d := derivers.Get().(*deriver)
	defer derivers.Put(d)
	var out Derived
	d.derive(k.Secret.b, &out, siv)
	return out, nil
}

// deriver computes HKDF-SHA256 with HMAC states it keeps and restores
// (crypto/hmac allocates two SHA-256 states and their saved pads per key).
// HMAC(K, m) = H(K^opad | H(K^ipad | m)): the states after K^ipad and
// K^opad are hashed once per key and restored per message.
type deriver struct {
	inner, outer hash.Hash
	// zeroIn and zeroOut are the states of HKDF-Extract's key (no salt:
	// HashLen zero bytes, the same for every category key); keyIn and
	// keyOut those of the pseudo-random key being expanded.
	zeroIn, zeroOut, keyIn, keyOut []byte
	// buf holds a pad (its first block), a sum (after it) and a message
	// (after that): what goes through hash.Hash escapes.
	buf []byte
}

// sha256State is what SHA-256's state can be saved and restored with.
type sha256State interface {
	AppendBinary([]byte) ([]byte, error)
	UnmarshalBinary([]byte) error
}

var derivers = sync.Pool{New: func() any {
	d := &deriver{inner: sha256.New(), outer: sha256.New(), buf: make([]byte, 0, 4*sha256.BlockSize)}
	var zero [sha256.Size]byte
	d.zeroIn, d.zeroOut = d.key(zero[:], nil, nil)
	return d
}}

// key saves the inner and outer HMAC states of key (at most a block
// long) into in and out.
func (d *deriver) key(key []byte, in, out []byte) ([]byte, []byte) {
	pad := d.buf[:sha256.BlockSize]
	save := func(h hash.Hash, x byte, dst []byte) []byte {
		clear(pad)
		copy(pad, key)
		for i := range pad {
			pad[i] ^= x
		}
		h.Reset()
		h.Write(pad)
		b, err := h.(sha256State).AppendBinary(dst[:0])
		if err != nil {
			panic("fieldcrypt: saving a SHA-256 state: " + err.Error())
		}
		return b
	}
	in, out = save(d.inner, 0x36, in), save(d.outer, 0x5c, out)
	clear(pad)
	return in, out
}

// mac writes HMAC(key whose states are in, out; msg) to dst.
func (d *deriver) mac(in, out, msg, dst []byte) {
	restore := func(h hash.Hash, state []byte) {
		if err := h.(sha256State).UnmarshalBinary(state); err != nil {
			panic("fieldcrypt: restoring a SHA-256 state: " + err.Error())
		}
	}
	restore(d.inner, in)
	d.inner.Write(msg)
	sum := d.inner.Sum(d.buf[sha256.BlockSize:sha256.BlockSize])
	restore(d.outer, out)
	d.outer.Write(sum)
	copy(dst, d.outer.Sum(d.buf[sha256.BlockSize:sha256.BlockSize]))
}

// derive is HKDF(secret, info) for the AES-GCM key into out, and for the
// AES-SIV key too with siv.
func (d *deriver) derive(secret []byte, out *Derived, siv bool) {
	var prk [sha256.Size]byte
	d.mac(d.zeroIn, d.zeroOut, secret, prk[:])
	d.keyIn, d.keyOut = d.key(prk[:], d.keyIn, d.keyOut)
	clear(prk[:])
	d.expand(out.b[:DerivedGCMSize], infoGCM)
	if siv {
		d.expand(out.b[DerivedGCMSize:], infoSIV)
	}
	clear(d.keyIn)
	clear(d.keyOut)
	clear(d.buf[:cap(d.buf)])
}

// expand is RFC 5869's HKDF-Expand of the key in keyIn/keyOut into dst
// (at most 255 blocks): T(i) = HMAC(T(i-1) | info | i), T(0) empty.
func (d *deriver) expand(dst []byte, info string) {
	const at = sha256.BlockSize + sha256.Size // where buf holds the message
	var t [sha256.Size]byte
	n := 0
	for i := byte(1); len(dst) > 0; i++ {
		msg := append(append(append(d.buf[at:at], t[:n]...), info...), i)
		d.mac(d.keyIn, d.keyOut, msg, t[:])
		n = sha256.Size
		dst = dst[copy(dst, t[:]):]
	}
	clear(t[:])
}

// WithDerived returns k carrying d, which must be what DeriveKey gave for
// the same secret (a key cache stores both and returns them together; a
// wrong one would seal values nobody can open), and must not be written
// afterwards: copies of k share it.
func (k CategoryKey) WithDerived(d *Derived) CategoryKey {
	k.derived = d
	return k
}

// SetDerived is WithDerived in place, for key caches that build the keys
// of an answer where they are kept: WithDerived's copy of each key cost
// keyclient's warm lookup 140 -> 162 ns per user (BenchmarkWarmLookup,
// 1000 users).
func (k *CategoryKey) SetDerived(d *Derived) { k.derived = d }

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
	return NewSecret(d.b[:32]), NewSecret(d.b[32:]), nil
}
