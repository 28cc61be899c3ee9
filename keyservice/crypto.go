package keyservice

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// MasterKeySize is the size of the master key.
const MasterKeySize = 32

// Info strings (format version 1; a change is a new version, never an edit).
const (
	deriveInfoPrefix = "lockstream/keyservice/v1"
	wrapInfo         = "lockstream/keyservice/v1/master/wrap"
	indexInfo        = "lockstream/keyservice/v1/master/index"
	sealAADPrefix    = "lockstream/keyservice/v1/root"
	checkAAD         = "lockstream/keyservice/v1/master-check"
	rootKeySize      = 32
)

// LoadMasterKey reads a master key file: the standard base64 encoding of 32
// bytes, surrounding whitespace ignored. The error names the file but never
// contains its content.
func LoadMasterKey(path string) (fieldcrypt.Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return fieldcrypt.Secret{}, fmt.Errorf("keyservice: master key file: %w", err)
	}
	k, err := parseMasterKey(b)
	if err != nil {
		return fieldcrypt.Secret{}, fmt.Errorf("keyservice: master key file %s: %w", path, err)
	}
	return k, nil
}

// MasterKeyFromEnv reads the master key from environment variable name
// (e.g. "LOCKSTREAM_MASTER_KEY"), in the same format as [LoadMasterKey].
func MasterKeyFromEnv(name string) (fieldcrypt.Secret, error) {
	v, ok := os.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return fieldcrypt.Secret{}, fmt.Errorf("keyservice: master key: environment variable %s is not set", name)
	}
	k, err := parseMasterKey([]byte(v))
	if err != nil {
		return fieldcrypt.Secret{}, fmt.Errorf("keyservice: master key in %s: %w", name, err)
	}
	return k, nil
}

// GenerateMasterKey returns a new random master key in the file/env format
// (base64 of 32 random bytes), for `lockstream keys init`-style commands.
func GenerateMasterKey() string {
	b := make([]byte, MasterKeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func parseMasterKey(b []byte) (fieldcrypt.Secret, error) {
	s := strings.TrimSpace(string(b))
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return fieldcrypt.Secret{}, errors.New("not valid base64 (want the base64 of 32 random bytes, e.g. `head -c32 /dev/urandom | base64`)")
	}
	if len(raw) != MasterKeySize {
		return fieldcrypt.Secret{}, fmt.Errorf("decodes to %d bytes, want %d", len(raw), MasterKeySize)
	}
	return fieldcrypt.NewSecret(raw), nil
}

// keyring holds what the service derives from the master key.
type keyring struct {
	wrap     cipher.AEAD // seals root keys
	indexKey []byte      // HMAC key for user id index rows
	hmacs    sync.Pool   // of *indexMAC keyed by indexKey
}

// indexMAC is a reusable HMAC-SHA256 state keyed by the index key, with a
// scratch buffer: one lookup is Reset + Write + Sum, no hmac.New.
type indexMAC struct {
	h   hash.Hash
	buf []byte
}

func newKeyring(master fieldcrypt.Secret) (*keyring, error) {
	if master.Len() != MasterKeySize {
		return nil, fmt.Errorf("%w: master key must be %d bytes, got %d", ErrInvalidArgument, MasterKeySize, master.Len())
	}
	wk, err := hkdf.Key(sha256.New, master.Expose(), nil, wrapInfo, 32)
	if err != nil {
		return nil, err
	}
	ik, err := hkdf.Key(sha256.New, master.Expose(), nil, indexInfo, 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(wk)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	kr := &keyring{wrap: g, indexKey: ik}
	kr.hmacs.New = func() any { return &indexMAC{h: hmac.New(sha256.New, kr.indexKey), buf: make([]byte, 0, 128)} }
	return kr, nil
}

// userSum is HMAC-SHA256(index key, user id).
func (kr *keyring) userSum(userID string) (sum [sha256.Size]byte) {
	m := kr.hmacs.Get().(*indexMAC)
	m.h.Reset()
	m.buf = append(m.buf[:0], userID...)
	m.h.Write(m.buf)
	m.buf = m.h.Sum(m.buf[:0])
	copy(sum[:], m.buf)
	if cap(m.buf) <= 4096 {
		kr.hmacs.Put(m)
	}
	return sum
}

// userHash is hex(HMAC-SHA256(index key, user id)): what the store holds
// instead of the user id.
func (kr *keyring) userHash(userID string) string {
	sum := kr.userSum(userID)
	return hex.EncodeToString(sum[:])
}

func appendLP(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

func sealAAD(row, category string, version int) []byte {
	b := []byte(sealAADPrefix)
	b = appendLP(b, row)
	b = appendLP(b, category)
	return appendLP(b, strconv.Itoa(version))
}

// seal encrypts a root key for (row, category, version):
// nonce (12) | AES-256-GCM ciphertext+tag.
func (kr *keyring) seal(root []byte, row, category string, version int) []byte {
	nonce := make([]byte, kr.wrap.NonceSize(), kr.wrap.NonceSize()+len(root)+kr.wrap.Overhead())
	_, _ = rand.Read(nonce)
	return kr.wrap.Seal(nonce, nonce, root, sealAAD(row, category, version))
}

func (kr *keyring) open(sealed []byte, row, category string, version int) ([]byte, error) {
	ns := kr.wrap.NonceSize()
	if len(sealed) < ns+kr.wrap.Overhead() {
		return nil, ErrSealedRow
	}
	pt, err := kr.wrap.Open(nil, sealed[:ns], sealed[ns:], sealAAD(row, category, version))
	if err != nil || len(pt) != rootKeySize {
		return nil, ErrSealedRow
	}
	return pt, nil
}

// deriveInfo is the HKDF info of a derived key:
//
//	"lockstream/keyservice/v1" || LP(scope) || LP(category) || LP(decimal version)
//
// where LP(s) is the 4-byte big-endian length of s followed by s.
func deriveInfo(scope, category string, version int) string {
	b := make([]byte, 0, len(deriveInfoPrefix)+12+len(scope)+len(category)+10)
	b = append(b, deriveInfoPrefix...)
	b = appendLP(b, scope)
	b = appendLP(b, category)
	b = appendLP(b, strconv.Itoa(version))
	return string(b)
}

// extract is HKDF-Extract(salt = nil, ikm = root key); the service keeps the
// PRK of each decrypted root key so that deriving is one HKDF-Expand.
func extract(root []byte) ([]byte, error) {
	return hkdf.Extract(sha256.New, root, nil)
}

// derive is HKDF-Expand(prk, deriveInfo(scope, category, version), 32),
// i.e. HKDF-SHA256(ikm = root key, salt = nil, info) as RFC 5869.
func derive(prk []byte, scope, category string, version int) (fieldcrypt.Secret, error) {
	k, err := hkdf.Expand(sha256.New, prk, deriveInfo(scope, category, version), fieldcrypt.CategoryKeySize)
	if err != nil {
		return fieldcrypt.Secret{}, err
	}
	return fieldcrypt.NewSecret(k), nil
}

func newRootKey() []byte {
	b := make([]byte, rootKeySize)
	_, _ = rand.Read(b)
	return b
}

const subjectAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// newSubject returns "s_" + 26 lower-case base32 characters of 16 random bytes.
func newSubject() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	enc := make([]byte, 26)
	var acc uint32
	var bits uint
	j := 0
	for _, x := range b {
		acc = acc<<8 | uint32(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			enc[j] = subjectAlphabet[(acc>>bits)&31]
			j++
		}
	}
	if bits > 0 {
		enc[j] = subjectAlphabet[(acc<<(5-bits))&31]
	}
	return "s_" + string(enc)
}

// ValidSubject reports whether s has the form of a _subject.
func ValidSubject(s string) bool {
	if len(s) != 28 || s[:2] != "s_" {
		return false
	}
	for i := 2; i < len(s); i++ {
		if strings.IndexByte(subjectAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
