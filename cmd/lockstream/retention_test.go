package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

func TestRetentionCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := blob.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC) // raw past 14 days, dataset within 400
	for _, n := range []string{layout.RawDir("PlaybackEvent", 1, old) + "part-a.avro", layout.DatasetDir("PlaybackEvent", 1, old) + layout.Success} {
		if err := blob.WriteAll(ctx, b, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	raw := layout.RawDir("PlaybackEvent", 1, old) + "part-a.avro"
	out, err := runCLI(t, ctx, "", "retention", "--root", dir, "--now", "2026-03-01T00")
	if err != nil || !strings.Contains(out, "would delete") || !strings.Contains(out, "--apply") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if ok, _ := b.Exists(ctx, raw); !ok {
		t.Fatal("the dry run deleted")
	}
	out, err = runCLI(t, ctx, "", "retention", "--root", dir, "--now", "2026-03-01T00", "--apply")
	if err != nil || !strings.Contains(out, "delete ") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if ok, _ := b.Exists(ctx, raw); ok {
		t.Fatal("--apply kept the expired raw hour")
	}
	if ok, _ := b.Exists(ctx, layout.DatasetDir("PlaybackEvent", 1, old)+layout.Success); !ok {
		t.Fatal("a dataset within retention was deleted")
	}
	if _, err := runCLI(t, ctx, "", "retention"); err == nil || !strings.Contains(err.Error(), "--root") {
		t.Fatalf("no root: %v", err)
	}
}
