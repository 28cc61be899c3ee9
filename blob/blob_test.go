package blob

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDir(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteAll(ctx, b, "raw/A/v1/2026-11-23/06/part-1.avro", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteAll(ctx, b, "raw/A/v1/2026-11-23/06/part-1.avro", []byte("two")); !errors.Is(err, ErrExist) {
		t.Fatalf("overwrite: %v", err)
	}
	got, err := ReadAll(ctx, b, "raw/A/v1/2026-11-23/06/part-1.avro")
	if err != nil || string(got) != "one" {
		t.Fatalf("read %q %v", got, err)
	}
	// An aborted writer leaves nothing behind, not even a temp file in List.
	w, _ := b.Create(ctx, "raw/A/v1/2026-11-23/06/part-2.avro")
	w.Write([]byte("partial"))
	w.Abort()
	if ok, _ := b.Exists(ctx, "raw/A/v1/2026-11-23/06/part-2.avro"); ok {
		t.Fatal("aborted object exists")
	}
	// A writer that never closes (crash) is invisible too.
	w, _ = b.Create(ctx, "raw/A/v1/2026-11-23/06/part-3.avro")
	w.Write([]byte("partial"))
	names, err := b.List(ctx, "raw/A/v1/2026-11-23/")
	if err != nil || !slices.Equal(names, []string{"raw/A/v1/2026-11-23/06/part-1.avro"}) {
		t.Fatalf("list = %v %v", names, err)
	}
	if names, _ := b.List(ctx, "nothing/"); len(names) != 0 {
		t.Fatal("list of missing prefix")
	}
	if _, err := b.Open(ctx, "missing"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("open missing: %v", err)
	}
	for _, bad := range []string{"", "/abs", "../up", "a/../b", "a//b"} {
		if _, err := b.Create(ctx, bad); err == nil {
			t.Fatalf("accepted name %q", bad)
		}
	}
	if err := b.Delete(ctx, "raw/A/v1/2026-11-23/06/part-1.avro"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "raw/A/v1/2026-11-23/06/part-1.avro"); err != nil {
		t.Fatal("deleting a missing object is not an error")
	}
	if _, err := os.Stat(filepath.Join(b.Root(), "raw")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, "s3://x"); err == nil {
		t.Fatal("unsupported scheme accepted")
	}
}
