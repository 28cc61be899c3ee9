package keyservice

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstream/lockstream/fieldcrypt"
)

var testMaster = fieldcrypt.NewSecret(bytes.Repeat([]byte{7}, 32))

func TestDeriveInfoFormat(t *testing.T) {
	got := deriveInfo("ingest", "contact", 12)
	want := "lockstream/keyservice/v1" +
		"\x00\x00\x00\x06ingest" + "\x00\x00\x00\x07contact" + "\x00\x00\x00\x0212"
	if got != want {
		t.Fatalf("info = %q, want %q", got, want)
	}
}

// TestDeriveIsHKDF pins the derivation to plain RFC 5869 HKDF-SHA256 with
// salt nil (what doc.go documents), via the one-shot hkdf.Key.
func TestDeriveIsHKDF(t *testing.T) {
	root := bytes.Repeat([]byte{0xab}, 32)
	prk, err := extract(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := derive(prk, "ingest", "contact", 1)
	if err != nil {
		t.Fatal(err)
	}
	want, err := hkdf.Key(sha256.New, root, nil, deriveInfo("ingest", "contact", 1), 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Expose(), want) {
		t.Fatal("derive differs from HKDF-SHA256(root, nil, info)")
	}
	// Pinned vector (root = 32×0xab, scope "ingest", category "contact",
	// version 1): a change of this value is a format change (v2), never an edit.
	const vector = "4f6dcc0207fa1e4cc713c3290a2e533ff867f59692bf8c4876855caef5370dac"
	if h := hex.EncodeToString(got.Expose()); h != vector {
		t.Fatalf("derived key = %s, want %s", h, vector)
	}
}

func TestDeriveSeparation(t *testing.T) {
	prk, _ := extract(bytes.Repeat([]byte{1}, 32))
	prk2, _ := extract(bytes.Repeat([]byte{2}, 32))
	seen := map[string]string{}
	add := func(name string, p []byte, scope, cat string, v int) {
		k, err := derive(p, scope, cat, v)
		if err != nil {
			t.Fatal(err)
		}
		h := hex.EncodeToString(k.Expose())
		if prev, ok := seen[h]; ok {
			t.Fatalf("%s and %s derive the same key", prev, name)
		}
		seen[h] = name
		again, _ := derive(p, scope, cat, v)
		if !again.Equal(k) {
			t.Fatalf("%s not deterministic", name)
		}
	}
	add("base", prk, "ingest", "contact", 1)
	add("scope", prk, "view", "contact", 1)
	add("category", prk, "ingest", "device", 1)
	add("version", prk, "ingest", "contact", 2)
	add("root", prk2, "ingest", "contact", 1)
	// Length prefixes keep boundaries: ("ab","c") != ("a","bc").
	add("boundary1", prk, "ab", "c", 1)
	add("boundary2", prk, "a", "bc", 1)
	add("version10", prk, "ingest", "contact", 10)
	add("version1-0", prk, "ingest", "contact1", 0)
}

func TestSealBindsRowCategoryVersion(t *testing.T) {
	kr, err := newKeyring(testMaster)
	if err != nil {
		t.Fatal(err)
	}
	root := newRootKey()
	sealed := kr.seal(root, "sub_s_a", "contact", 1)
	if bytes.Contains(sealed, root) {
		t.Fatal("root key in the clear")
	}
	if got, err := kr.open(sealed, "sub_s_a", "contact", 1); err != nil || !bytes.Equal(got, root) {
		t.Fatalf("open = %v", err)
	}
	for name, f := range map[string]func() error{
		"other row":      func() error { _, err := kr.open(sealed, "sub_s_b", "contact", 1); return err },
		"other category": func() error { _, err := kr.open(sealed, "sub_s_a", "device", 1); return err },
		"other version":  func() error { _, err := kr.open(sealed, "sub_s_a", "contact", 2); return err },
		"truncated":      func() error { _, err := kr.open(sealed[:10], "sub_s_a", "contact", 1); return err },
	} {
		if err := f(); !errors.Is(err, ErrSealedRow) {
			t.Errorf("%s: %v, want ErrSealedRow", name, err)
		}
	}
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		if _, err := kr.open(b, "sub_s_a", "contact", 1); !errors.Is(err, ErrSealedRow) {
			t.Fatalf("flipped byte %d opened", i)
		}
	}
	other, _ := newKeyring(fieldcrypt.NewSecret(bytes.Repeat([]byte{8}, 32)))
	if _, err := other.open(sealed, "sub_s_a", "contact", 1); !errors.Is(err, ErrSealedRow) {
		t.Fatal("opened under another master key")
	}
}

func TestMasterKeyLoading(t *testing.T) {
	dir := t.TempDir()
	raw := bytes.Repeat([]byte{0x5a}, 32)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600)
	k, err := LoadMasterKey(good)
	if err != nil || !bytes.Equal(k.Expose(), raw) {
		t.Fatalf("LoadMasterKey = %v", err)
	}
	short := filepath.Join(dir, "short")
	secretText := base64.StdEncoding.EncodeToString(raw[:16])
	os.WriteFile(short, []byte(secretText), 0o600)
	if _, err := LoadMasterKey(short); err == nil || !strings.Contains(err.Error(), "16 bytes") || strings.Contains(err.Error(), secretText) {
		t.Fatalf("short key: %v", err)
	}
	notb64 := filepath.Join(dir, "notb64")
	os.WriteFile(notb64, []byte("this is not base64 !!"), 0o600)
	if _, err := LoadMasterKey(notb64); err == nil || !strings.Contains(err.Error(), "base64") || strings.Contains(err.Error(), "this is not") {
		t.Fatalf("non-base64: %v", err)
	}
	if _, err := LoadMasterKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
	t.Setenv("TEST_MASTER", base64.StdEncoding.EncodeToString(raw))
	if k, err := MasterKeyFromEnv("TEST_MASTER"); err != nil || !bytes.Equal(k.Expose(), raw) {
		t.Fatalf("MasterKeyFromEnv = %v", err)
	}
	if _, err := MasterKeyFromEnv("TEST_MASTER_UNSET_X"); err == nil || !strings.Contains(err.Error(), "TEST_MASTER_UNSET_X") {
		t.Fatalf("unset env: %v", err)
	}
	gen := GenerateMasterKey()
	t.Setenv("TEST_MASTER", gen)
	if k, err := MasterKeyFromEnv("TEST_MASTER"); err != nil || k.Len() != 32 {
		t.Fatalf("generated key: %v", err)
	}
	if fmt.Sprint(k) != "[redacted]" {
		t.Fatal("master key printable")
	}
}

func TestSubjects(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s := newSubject()
		if !ValidSubject(s) || seen[s] {
			t.Fatalf("bad or repeated subject %q", s)
		}
		seen[s] = true
	}
	for _, bad := range []string{"", "s_", "x_aaaaaaaaaaaaaaaaaaaaaaaaaa", "s_AAAAAAAAAAAAAAAAAAAAAAAAAA", "s_aaaaaaaaaaaaaaaaaaaaaaaaa1"} {
		if ValidSubject(bad) {
			t.Errorf("ValidSubject(%q)", bad)
		}
	}
}
