package fieldcrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/daead/aessiv"
	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"
	"github.com/tink-crypto/tink-go/v2/secretdata"
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

// Cipher encrypts and decrypts field values under one category key. It
// holds the key's per-algorithm keys (HKDF outputs: 32 bytes for
// AES-256-GCM, 64 for AES-SIV) and no pointer: it is a value, and the AES
// state is built where a value is sealed or opened.
//
// Both algorithms write Tink's wire format: AES-GCM (prefix | IV |
// ciphertext | tag, the IV random) and AES-SIV (prefix | SIV |
// ciphertext), on this package's AES-NI code (aes.go) or on crypto/aes and
// crypto/cipher without it. insecurekeyset's tests decrypt these
// ciphertexts with Tink itself, and Decrypt opens Tink's. The AES state is
// built per value on the stack (with AES-NI; crypto/cipher's is 1.3 KB on
// the heap): a cache of built states (~1.2 KB each, live) for a million
// events of 50k users kept ~250k of them, 300 MB the collector marked on
// every cycle.
type Cipher struct {
	version uint32
	gcm     [32]byte
	// hasSIV: siv holds the AES-SIV key. A cipher asked of a Cache for
	// AES-GCM only may lack it (Cache.Cipher).
	hasSIV bool
	siv    [64]byte
}

// NewCipher derives the per-algorithm keys of a category key.
func NewCipher(k CategoryKey) (*Cipher, error) {
	c, err := cipherOf(k)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// cipherOf derives the per-algorithm keys of k (DeriveKey).
func cipherOf(k CategoryKey) (Cipher, error) {
	d, err := DeriveKey(k)
	if err != nil {
		return Cipher{}, err
	}
	return Cipher{version: uint32(k.Version), gcm: d.gcm(), hasSIV: true, siv: d.siv()}, nil
}

func (c *Cipher) prefix() [prefixSize]byte {
	var p [prefixSize]byte
	p[0] = tinkStartByte
	binary.BigEndian.PutUint32(p[1:], c.version)
	return p
}

func (c *Cipher) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(c.gcm[:])
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-gcm: %w", err)
	}
	g, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("fieldcrypt: build aes-gcm: %w", err)
	}
	return g, nil
}

// deterministic keys d with the AES-SIV key.
func (c *Cipher) deterministic(d *sivKeys) error {
	if !c.hasSIV {
		return errors.New("fieldcrypt: this cipher was made for AES-GCM only; ask the cache for a deterministic one")
	}
	if err := d.init(c.siv[:]); err != nil {
		return fmt.Errorf("fieldcrypt: build aes-siv: %w", err)
	}
	return nil
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
func (c *Cipher) Version() int { return int(c.version) }

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
	p := c.prefix()
	if deterministic {
		var d sivKeys
		if err := c.deterministic(&d); err != nil {
			return nil, err
		}
		defer d.wipe()
		return d.seal(append(dst, p[:]...), plaintext, aad), nil
	}
	if useAESNI {
		return gcmSeal(&c.gcm, append(dst, p[:]...), plaintext, aad), nil
	}
	g, err := c.aead()
	if err != nil {
		return nil, err
	}
	return g.Seal(append(dst, p[:]...), nil, plaintext, aad), nil
}

// Decrypt opens a ciphertext made by Encrypt (or by Tink under this key)
// with the same AAD and mode.
func (c *Cipher) Decrypt(ciphertext, aad []byte, deterministic bool) ([]byte, error) {
	return c.AppendDecrypt(nil, ciphertext, aad, deterministic)
}

// AppendDecrypt appends the plaintext of ciphertext to dst and returns the
// extended slice, as Decrypt would return the plaintext (on failure, nil
// and dst's room past its length holds nothing of it).
func (c *Cipher) AppendDecrypt(dst, ciphertext, aad []byte, deterministic bool) ([]byte, error) {
	p := c.prefix()
	if len(ciphertext) < prefixSize || [prefixSize]byte(ciphertext[:prefixSize]) != p {
		return nil, ErrDecrypt
	}
	if deterministic {
		var d sivKeys
		if err := c.deterministic(&d); err != nil {
			return nil, err
		}
		defer d.wipe()
		return d.open(dst, ciphertext[prefixSize:], aad)
	}
	if len(ciphertext) < prefixSize+gcmIVSize+gcmTagSize {
		return nil, ErrDecrypt
	}
	if useAESNI {
		return gcmOpen(&c.gcm, dst, ciphertext[prefixSize:], aad)
	}
	g, err := c.aead()
	if err != nil {
		return nil, err
	}
	pt, err := g.Open(dst, nil, ciphertext[prefixSize:], aad)
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
