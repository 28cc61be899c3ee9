package blob

import (
	"bytes"
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
	runBucketContract(t, b)
	if _, err := os.Stat(filepath.Join(b.Root(), "raw")); err != nil {
		t.Fatal(err)
	}
}

func TestOpenUnsupported(t *testing.T) {
	if _, err := Open(context.Background(), "s3://x"); err == nil {
		t.Fatal("unsupported scheme accepted")
	}
}

// runBucketContract is the behaviour every Bucket implementation must have.
// b must be empty.
func runBucketContract(t *testing.T, b Bucket) {
	t.Helper()
	ctx := context.Background()
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
	// Two writers racing for one name: exactly one wins, the other gets
	// ErrExist, and the content is the winner's.
	w1, err := b.Create(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := b.Create(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	w1.Write([]byte("first"))
	w2.Write([]byte("second"))
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(); !errors.Is(err, ErrExist) {
		t.Fatalf("second writer of a name: %v", err)
	}
	if got, err := ReadAll(ctx, b, "race"); err != nil || string(got) != "first" {
		t.Fatalf("race winner: %q %v", got, err)
	}
	// Abort after Close does nothing (a deferred Abort is safe); Abort
	// before it leaves nothing.
	w, err := b.Create(ctx, "closed-then-aborted")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("kept"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if got, err := ReadAll(ctx, b, "closed-then-aborted"); err != nil || string(got) != "kept" {
		t.Fatalf("Abort after Close: %q %v", got, err)
	}
	if err := b.Delete(ctx, "closed-then-aborted"); err != nil {
		t.Fatal(err)
	}
	if w, err = b.Create(ctx, "aborted"); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("gone"))
	w.Abort()
	if _, err := ReadAll(ctx, b, "aborted"); err == nil {
		t.Fatal("an aborted object was readable")
	}
	// Empty and large (multi-MiB, written in pieces) objects round-trip.
	if err := WriteAll(ctx, b, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAll(ctx, b, "empty"); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q %v", got, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	w, err = b.Create(ctx, "big/object")
	if err != nil {
		t.Fatal(err)
	}
	for p := big; len(p) > 0; p = p[min(len(p), 100_000):] {
		if _, err := w.Write(p[:min(len(p), 100_000)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAll(ctx, b, "big/object"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big: %d bytes, %v", len(got), err)
	}
	// An aborted writer leaves nothing behind, not even a temp file in List.
	w, _ = b.Create(ctx, "raw/A/v1/2026-11-23/06/part-2.avro")
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
	w.Abort()
	if names, _ := b.List(ctx, "nothing/"); len(names) != 0 {
		t.Fatal("list of missing prefix")
	}
	// A prefix need not end at a "/"; List("") lists everything, sorted.
	if err := WriteAll(ctx, b, "raw/A/v1/2026-11-23/06/part-10.avro", []byte("x")); err != nil {
		t.Fatal(err)
	}
	names, err = b.List(ctx, "raw/A/v1/2026-11-23/06/part-1")
	if err != nil || !slices.Equal(names, []string{"raw/A/v1/2026-11-23/06/part-1.avro", "raw/A/v1/2026-11-23/06/part-10.avro"}) {
		t.Fatalf("list name prefix = %v %v", names, err)
	}
	names, err = b.List(ctx, "")
	want := []string{"big/object", "empty", "race", "raw/A/v1/2026-11-23/06/part-1.avro", "raw/A/v1/2026-11-23/06/part-10.avro"}
	if err != nil || !slices.Equal(names, want) {
		t.Fatalf("list all = %v %v", names, err)
	}
	if _, err := b.Open(ctx, "missing"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("open missing: %v", err)
	}
	if ok, err := b.Exists(ctx, "missing"); ok || err != nil {
		t.Fatalf("exists missing: %v %v", ok, err)
	}
	if ok, err := b.Exists(ctx, "race"); !ok || err != nil {
		t.Fatalf("exists: %v %v", ok, err)
	}
	for _, bad := range []string{"", "/abs", "../up", "a/../b", "a//b"} {
		if _, err := b.Create(ctx, bad); err == nil {
			t.Fatalf("accepted name %q", bad)
		}
	}
	if err := b.Delete(ctx, "raw/A/v1/2026-11-23/06/part-1.avro"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Exists(ctx, "raw/A/v1/2026-11-23/06/part-1.avro"); ok {
		t.Fatal("deleted object exists")
	}
	if err := b.Delete(ctx, "raw/A/v1/2026-11-23/06/part-1.avro"); err != nil {
		t.Fatal("deleting a missing object is not an error")
	}
	// A deleted name can be created again.
	if err := WriteAll(ctx, b, "raw/A/v1/2026-11-23/06/part-1.avro", []byte("three")); err != nil {
		t.Fatal(err)
	}
}
