package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Mode is what a calling service may do with keys.
type Mode string

const (
	// ModeEncrypt: GetOrCreateKeys and GetKeysByUser.
	ModeEncrypt Mode = "encrypt"
	// ModeDecrypt: ModeEncrypt plus GetKeysBySubject.
	ModeDecrypt Mode = "decrypt"
	// ModeNone: no key calls (an admin-only service).
	ModeNone Mode = "none"
)

// ServiceConfig is one calling service in the services file.
type ServiceConfig struct {
	Name string `json:"name"`
	// SecretSHA256 is the lowercase hex SHA-256 of the secret (preferred:
	// the file then holds nothing that authenticates). Secret is the secret
	// itself (development only). Exactly one must be set.
	SecretSHA256 string `json:"secret_sha256,omitempty"`
	Secret       string `json:"secret,omitempty"`
	// Scopes and Categories the service may ask for; "*" allows all.
	Scopes     []string `json:"scopes"`
	Categories []string `json:"categories"`
	Mode       Mode     `json:"mode"`
	// Admin allows CreateKeychain, DeleteUser, RevokeCategory,
	// RotateCategory and ShowKeychain (categories still apply to revoke and
	// rotate).
	Admin bool `json:"admin,omitempty"`
}

// servicesFile is the JSON form of the services file.
type servicesFile struct {
	Services []ServiceConfig `json:"services"`
}

// Services is a parsed services file: who may call, with which rights.
type Services struct {
	list []*caller
}

type caller struct {
	name       string
	hash       [sha256.Size]byte
	scopes     []string
	categories []string
	mode       Mode
	admin      bool
}

// MinSecretLen is the shortest accepted plaintext secret.
const MinSecretLen = 16

// HashSecret returns the hex SHA-256 of a secret, the form of SecretSHA256.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// LoadServices reads a services file (JSON, see testdata/services.json).
func LoadServices(path string) (*Services, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server: services file: %w", err)
	}
	s, err := ParseServices(b)
	if err != nil {
		return nil, fmt.Errorf("server: services file %s: %w", path, err)
	}
	return s, nil
}

// ParseServices parses the JSON form of a services file. Unknown fields are
// errors (a misspelt "admin" must not silently grant nothing, or more).
func ParseServices(data []byte) (*Services, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var f servicesFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return NewServices(f.Services)
}

// NewServices validates service configs.
func NewServices(cfgs []ServiceConfig) (*Services, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("no services configured")
	}
	s := &Services{}
	names := map[string]bool{}
	for i, c := range cfgs {
		if c.Name == "" {
			return nil, fmt.Errorf("service #%d: name is empty", i)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("service %q: listed twice", c.Name)
		}
		names[c.Name] = true
		cl := &caller{name: c.Name, scopes: c.Scopes, categories: c.Categories, mode: c.Mode, admin: c.Admin}
		switch {
		case c.Secret != "" && c.SecretSHA256 != "":
			return nil, fmt.Errorf("service %q: set secret or secret_sha256, not both", c.Name)
		case c.Secret != "":
			if len(c.Secret) < MinSecretLen {
				return nil, fmt.Errorf("service %q: secret shorter than %d bytes", c.Name, MinSecretLen)
			}
			cl.hash = sha256.Sum256([]byte(c.Secret))
		case c.SecretSHA256 != "":
			b, err := hex.DecodeString(c.SecretSHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("service %q: secret_sha256 must be 64 hex digits", c.Name)
			}
			copy(cl.hash[:], b)
		default:
			return nil, fmt.Errorf("service %q: no secret or secret_sha256", c.Name)
		}
		switch c.Mode {
		case ModeEncrypt, ModeDecrypt:
			if len(c.Scopes) == 0 || len(c.Categories) == 0 {
				return nil, fmt.Errorf("service %q: mode %s needs scopes and categories", c.Name, c.Mode)
			}
		case ModeNone, "":
			cl.mode = ModeNone
			if !c.Admin {
				return nil, fmt.Errorf("service %q: mode must be encrypt or decrypt (or admin: true)", c.Name)
			}
		default:
			return nil, fmt.Errorf("service %q: unknown mode %q (want encrypt, decrypt or none)", c.Name, c.Mode)
		}
		for _, o := range s.list {
			if o.hash == cl.hash {
				return nil, fmt.Errorf("services %q and %q share a secret", o.name, c.Name)
			}
		}
		s.list = append(s.list, cl)
	}
	return s, nil
}

// authenticate finds the service whose secret hashes to the presented one,
// comparing against every service in constant time.
func (s *Services) authenticate(secret string) *caller {
	h := sha256.Sum256([]byte(secret))
	var found *caller
	for _, c := range s.list {
		if subtle.ConstantTimeCompare(h[:], c.hash[:]) == 1 {
			found = c
		}
	}
	return found
}

// Names lists the configured services.
func (s *Services) Names() []string {
	var out []string
	for _, c := range s.list {
		out = append(out, c.name)
	}
	return out
}

func allowed(list []string, v string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, v)
}
