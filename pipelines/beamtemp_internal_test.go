package pipelines

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
)

// TestSweepLoopbackFiles: only Beam's empty loopback files older than the
// cutoff go; a young one (a job may still be staging it), a non-empty one,
// a directory and other files stay.
func TestSweepLoopbackFiles(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	old := now.Add(-loopbackGrace - time.Minute)
	mk := func(name, content string, mtime time.Time) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	mk(loopbackPrefix+"111", "", old)
	mk(loopbackPrefix+"222", "", old)
	mk(loopbackPrefix+"young", "", now)
	mk(loopbackPrefix+"full", "x", old)
	mk("lockstream-gcs-333", "", old)
	if err := os.Mkdir(filepath.Join(dir, loopbackPrefix+"dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if n := sweepLoopbackFiles(dir, now.Add(-loopbackGrace)); n != 2 {
		t.Errorf("removed %d files, want 2", n)
	}
	want := []string{loopbackPrefix + "dir", loopbackPrefix + "full", loopbackPrefix + "young", "lockstream-gcs-333"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
	if n := sweepLoopbackFiles(filepath.Join(dir, "missing"), now); n != 0 {
		t.Errorf("a missing directory: removed %d", n)
	}
}

// TestRunSweepsLoopbackFiles: a job run on prism removes the loopback
// files older jobs left, and leaves at most its own (too young to remove).
func TestRunSweepsLoopbackFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	old := time.Now().Add(-loopbackGrace - time.Minute)
	for _, n := range []string{"1", "2", "3"} {
		p := filepath.Join(dir, loopbackPrefix+n)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	p, s := beam.NewPipelineWithRoot()
	stats.Sum(s, beam.Create(s, 1, 2, 3))
	if _, err := run(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, n := range names(t, dir) {
		if strings.HasPrefix(n, loopbackPrefix) {
			left = append(left, n)
		}
	}
	if len(left) > 1 || slices.ContainsFunc(left, func(n string) bool { return len(n) == len(loopbackPrefix)+1 }) {
		t.Errorf("loopback files left after a run: %q (want at most the run's own)", left)
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
