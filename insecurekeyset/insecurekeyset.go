package insecurekeyset

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/key"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// AEAD returns the AES-256-GCM keyset of one (subject, category) holding
// every version given; the highest version is primary.
func AEAD(keys ...fieldcrypt.CategoryKey) (*keyset.Handle, error) {
	return build(keys, func(k fieldcrypt.CategoryKey) (key.Key, error) {
		gcm, _, err := fieldcrypt.AlgorithmKeys(k)
		if err != nil {
			return nil, err
		}
		return fieldcrypt.GCMKey(gcm, k.Version)
	})
}

// Deterministic returns the AES-SIV keyset of one (subject, category).
func Deterministic(keys ...fieldcrypt.CategoryKey) (*keyset.Handle, error) {
	return build(keys, func(k fieldcrypt.CategoryKey) (key.Key, error) {
		_, siv, err := fieldcrypt.AlgorithmKeys(k)
		if err != nil {
			return nil, err
		}
		return fieldcrypt.SIVKey(siv, k.Version)
	})
}

func build(keys []fieldcrypt.CategoryKey, tinkKey func(fieldcrypt.CategoryKey) (key.Key, error)) (*keyset.Handle, error) {
	if len(keys) == 0 {
		return nil, errors.New("insecurekeyset: no keys")
	}
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b fieldcrypt.CategoryKey) int { return a.Version - b.Version })
	km := keyset.NewManager()
	var last uint32
	for i, k := range keys {
		if k.Subject != keys[0].Subject || k.Category != keys[0].Category {
			return nil, errors.New("insecurekeyset: keys of different subjects or categories in one keyset")
		}
		if i > 0 && k.Version == keys[i-1].Version {
			return nil, fmt.Errorf("insecurekeyset: version %d given twice", k.Version)
		}
		tk, err := tinkKey(k)
		if err != nil {
			return nil, fmt.Errorf("insecurekeyset: %s: %w", k, err)
		}
		if last, err = km.AddKey(tk); err != nil {
			return nil, fmt.Errorf("insecurekeyset: %s: %w", k, err)
		}
	}
	if err := km.SetPrimary(last); err != nil {
		return nil, fmt.Errorf("insecurekeyset: %w", err)
	}
	return km.Handle()
}

// Binary serializes a handle as a cleartext binary Tink keyset: the value
// BigQuery's AEAD functions take.
func Binary(h *keyset.Handle) ([]byte, error) {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&buf)); err != nil {
		return nil, fmt.Errorf("insecurekeyset: write binary: %w", err)
	}
	return buf.Bytes(), nil
}

// JSON serializes a handle as a cleartext JSON Tink keyset (tinkey's format).
func JSON(h *keyset.Handle) ([]byte, error) {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("insecurekeyset: write json: %w", err)
	}
	return buf.Bytes(), nil
}

// Read parses a cleartext keyset in binary or JSON form.
func Read(b []byte) (*keyset.Handle, error) {
	var r keyset.Reader = keyset.NewBinaryReader(bytes.NewReader(b))
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		r = keyset.NewJSONReader(bytes.NewReader(b))
	}
	h, err := insecurecleartextkeyset.Read(r)
	if err != nil {
		return nil, fmt.Errorf("insecurekeyset: read: %w", err)
	}
	return h, nil
}
