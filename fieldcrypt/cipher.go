package fieldcrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/daead"
	"github.com/tink-crypto/tink-go/v2/daead/aessiv"
	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/secretdata"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// ErrDecrypt is returned when a ciphertext does not decrypt: it was altered,
// it was made under another key, or its AAD (event type, field, subject)
// differs. The error never says which, by design.
var ErrDecrypt = errors.New("fieldcrypt: ciphertext does not decrypt under this key and AAD")

// ErrFormat is returned by VersionOf for a value that is not a Tink ciphertext.
var ErrFormat = errors.New("fieldcrypt: not a Tink-prefixed ciphertext")

const (
	tinkStartByte = 0x01
	prefixSize    = 5
	gcmIVSize     = 12
	gcmTagSize    = 16
	sivSize       = 16
)

// Cipher encrypts and decrypts field values under one category key.
// It is safe for concurrent use.
//
// AES-GCM is sealed with crypto/cipher directly, in Tink's wire format
// (prefix | IV | ciphertext | tag, the IV random), not through Tink's
// primitive: that one allocates the IV and the output per value and holds
// each key in several objects, and ingest seals ~2.4M values per million
// events under ~250k cached keys. insecurekeyset's tests decrypt these
// ciphertexts with Tink itself, and Decrypt opens Tink's.
type Cipher struct {
	version int
	prefix  [prefixSize]byte
	gcm     cipher.AEAD // IV generated at random and prepended by Seal

	// AES-SIV costs ~5 µs to build through a keyset and most categories
	// never use it, so it is built on first use, its key too (expanded
	// from the HKDF pseudo-random key, which is dropped then).
	sivOnce sync.Once
	prk     Secret
	daead   tink.DeterministicAEAD
	sivErr  error
}

// NewCipher builds the AES-GCM primitive of a category key (AES-SIV waits
// for its first use).
func NewCipher(k CategoryKey) (*Cipher, error) {
	prk, err := extract(k)
	if err != nil {
		return nil, err
	}
	gcmKey, err := expandGCM(prk)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(gcmKey.b)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-gcm: %w", err)
	}
	g, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-gcm: %w", err)
	}
	c := &Cipher{version: k.Version, gcm: g, prk: prk}
	c.prefix[0] = tinkStartByte
	binary.BigEndian.PutUint32(c.prefix[1:], uint32(k.Version))
	return c, nil
}

func (c *Cipher) deterministic() (tink.DeterministicAEAD, error) {
	c.sivOnce.Do(func() {
		sivKey, err := expandSIV(c.prk)
		c.prk = Secret{}
		if err != nil {
			c.sivErr = err
			return
		}
		c.daead, c.sivErr = newSIV(sivKey, c.version)
	})
	return c.daead, c.sivErr
}

func newSIV(material Secret, version int) (tink.DeterministicAEAD, error) {
	s, err := SIVKey(material, version)
	if err != nil {
		return nil, err
	}
	// aessiv exposes its primitive constructor only through a keyset.
	km := keyset.NewManager()
	id, err := km.AddKey(s)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-siv keyset: %w", err)
	}
	if err := km.SetPrimary(id); err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-siv keyset: %w", err)
	}
	h, err := km.Handle()
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-siv keyset: %w", err)
	}
	p, err := daead.New(h)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-siv: %w", err)
	}
	return p, nil
}

// GCMKey wraps derived AES-256-GCM material as a Tink key with the TINK
// prefix and the version as key id.
func GCMKey(material Secret, version int) (*aesgcm.Key, error) {
	params, err := aesgcm.NewParameters(aesgcm.ParametersOpts{
		KeySizeInBytes: 32, IVSizeInBytes: 12, TagSizeInBytes: 16, Variant: aesgcm.VariantTink,
	})
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: aes-gcm parameters: %w", err)
	}
	k, err := aesgcm.NewKey(secretdata.NewBytesFromData(material.b, insecuresecretdataaccess.Token{}), uint32(version), params)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: aes-gcm key: %w", err)
	}
	return k, nil
}

// SIVKey wraps derived AES-SIV material as a Tink key with the TINK prefix
// and the version as key id.
func SIVKey(material Secret, version int) (*aessiv.Key, error) {
	params, err := aessiv.NewParameters(64, aessiv.VariantTink)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: aes-siv parameters: %w", err)
	}
	k, err := aessiv.NewKey(secretdata.NewBytesFromData(material.b, insecuresecretdataaccess.Token{}), uint32(version), params)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: aes-siv key: %w", err)
	}
	return k, nil
}

// Version is the category key version (and Tink key id) of this cipher.
func (c *Cipher) Version() int { return c.version }

// Encrypt seals plaintext with AAD; deterministic selects AES-SIV.
func (c *Cipher) Encrypt(plaintext, aad []byte, deterministic bool) ([]byte, error) {
	return c.AppendEncrypt(make([]byte, 0, CiphertextSize(len(plaintext), deterministic)), plaintext, aad, deterministic)
}

// CiphertextSize is the length of the ciphertext Encrypt makes of n bytes.
func CiphertextSize(n int, deterministic bool) int {
	if deterministic {
		return prefixSize + sivSize + n
	}
	return prefixSize + gcmIVSize + n + gcmTagSize
}

// AppendEncrypt appends the ciphertext of plaintext (CiphertextSize bytes)
// to dst and returns the extended slice, as Encrypt would return it.
func (c *Cipher) AppendEncrypt(dst, plaintext, aad []byte, deterministic bool) ([]byte, error) {
	if deterministic {
		d, err := c.deterministic()
		if err != nil {
			return nil, err
		}
		ct, err := d.EncryptDeterministically(plaintext, aad)
		if err != nil {
			// Tink's errors carry no data bytes, but keep ours uniform anyway.
			return nil, errors.New("fieldcrypt: encrypt failed")
		}
		return append(dst, ct...), nil
	}
	return c.gcm.Seal(append(dst, c.prefix[:]...), nil, plaintext, aad), nil
}

// Decrypt opens a ciphertext made by Encrypt (or by Tink under this key)
// with the same AAD and mode.
func (c *Cipher) Decrypt(ciphertext, aad []byte, deterministic bool) ([]byte, error) {
	if deterministic {
		d, err := c.deterministic()
		if err != nil {
			return nil, err
		}
		pt, err := d.DecryptDeterministically(ciphertext, aad)
		if err != nil {
			return nil, ErrDecrypt
		}
		return pt, nil
	}
	if len(ciphertext) < prefixSize+gcmIVSize+gcmTagSize || [prefixSize]byte(ciphertext[:prefixSize]) != c.prefix {
		return nil, ErrDecrypt
	}
	pt, err := c.gcm.Open(nil, nil, ciphertext[prefixSize:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// VersionOf reads the key version (Tink key id) from a ciphertext's prefix.
func VersionOf(ciphertext []byte) (int, error) {
	if len(ciphertext) < prefixSize || ciphertext[0] != tinkStartByte {
		return 0, ErrFormat
	}
	v := binary.BigEndian.Uint32(ciphertext[1:prefixSize])
	if v == 0 || v > 1<<31-1 {
		return 0, ErrFormat
	}
	return int(v), nil
}

// AppendAAD appends the associated data of one field value to dst:
// "<eventType>.<field>|<subject>".
func AppendAAD(dst []byte, eventType, field, subject string) []byte {
	dst = append(dst, eventType...)
	dst = append(dst, '.')
	dst = append(dst, field...)
	dst = append(dst, '|')
	return append(dst, subject...)
}

// AAD returns the associated data of one field value.
func AAD(eventType, field, subject string) []byte {
	return AppendAAD(make([]byte, 0, len(eventType)+len(field)+len(subject)+2), eventType, field, subject)
}
