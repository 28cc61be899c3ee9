package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyCacheSizeFlag: ingest's and view's --key-cache-size take at least
// 1, and a bad value is refused before anything runs.
func TestKeyCacheSizeFlag(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0", "-5"} {
		root := newRootCmd()
		out := filepath.Join(dir, "out"+v)
		root.SetArgs([]string{"ingest", "--input", in, "--root", out, "--keys", "local:" + filepath.Join(dir, "keys"), "--key-cache-size=" + v})
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--key-cache-size") {
			t.Errorf("ingest --key-cache-size=%s: %v, want an error naming --key-cache-size", v, err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("ingest with --key-cache-size=%s wrote its output root (stat: %v)", v, err)
		}

		root = newRootCmd()
		root.SetArgs([]string{"view", "--root", dir, "--hour", "2026-11-23T06", "--type", "PlaybackEvent", "--out", out, "--keys", "local:" + filepath.Join(dir, "keys"), "--key-cache-size=" + v})
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--key-cache-size") {
			t.Errorf("view --key-cache-size=%s: %v, want an error naming --key-cache-size", v, err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("view with --key-cache-size=%s wrote its output (stat: %v)", v, err)
		}
	}
}
