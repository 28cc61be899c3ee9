package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstream/lockstream/synth"
)

// TestDemo runs `lockstream demo` in-process: the main job end to end. The
// demo checks its own accounting (published == distinct valid events); this
// test adds the privacy scan: no user id, e-mail or name canary in any byte
// under data/ or in what the demo printed.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	var out, log bytes.Buffer
	f := demoFlags{out: dir, events: 1500, users: 60, seed: 9}
	if err := runDemo(context.Background(), &out, &log, f); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), log.String())
	}
	for _, want := range []string{"accounting", "user A (deleted)", "after: NULL", "already-published"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// It ends with the status page of its root, and says where it is.
	if page, err := os.ReadFile(filepath.Join(dir, "status.html")); err != nil || !bytes.Contains(page, []byte(`data-state="supplemented"`)) {
		t.Fatalf("status.html: %v (a published hour with a supplement expected)", err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); !strings.HasPrefix(lines[len(lines)-1], "status page: ") {
		t.Fatalf("the demo's last line is %q, want the status page's path", lines[len(lines)-1])
	}
	tr := synth.Generate(synth.Config{Events: f.events, Users: f.users, Seed: f.seed})
	var canaries []string
	for _, c := range tr.Canaries {
		if strings.HasPrefix(c, "pii-user-") || strings.HasPrefix(c, "pii-email-") {
			canaries = append(canaries, c)
		}
	}
	for _, c := range canaries {
		if strings.Contains(log.String(), c) {
			t.Fatalf("log line holds PII %q", c)
		}
		// stdout shows decrypted e-mails on purpose (the analyst's view) but never a user id.
		if strings.HasPrefix(c, "pii-user-") && strings.Contains(out.String(), c) {
			t.Fatalf("demo printed user id %q", c)
		}
	}
	err := filepath.WalkDir(filepath.Join(dir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, c := range canaries {
			if bytes.Contains(data, []byte(c)) {
				t.Fatalf("plaintext %q in %s", c, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
