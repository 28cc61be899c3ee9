package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRedriveCLIErrors: a configuration error fails in one line before
// ROOT is read (or created). (The redrive itself: package redrive.)
func TestRedriveCLIErrors(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "nothing-here")
	keys := "local:" + filepath.Join(t.TempDir(), "keys")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"redrive", "--reason", "unknown_version", "--keys", keys}, "--root is required"},
		{[]string{"redrive", "--root", missing, "--keys", keys}, "--reason is required"},
		{[]string{"redrive", "--root", missing, "--reason", "unknown_version", "--keys", ""}, "--keys is required"},
		{[]string{"redrive", "--root", missing, "--reason", "unknown_version", "--keys", "ftp://x"}, "--keys"},
		{[]string{"redrive", "--root", missing, "--reason", "unknown_version", "--keys", keys, "--since", "yesterday"}, "--since"},
		{[]string{"redrive", "--root", missing, "--reason", "unknown_version", "--keys", keys, "--since", "2026-11-23T08", "--until", "2026-11-23T06"}, "not before"},
		{[]string{"redrive", "--root", missing, "--reason", "unknown_version", "--keys", keys}, "no such directory"},
	} {
		out, err := runCLI(t, ctx, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line with %q\n%s", c.args, err, c.want, out)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("redrive created %s (%v)", missing, err)
	}
}
