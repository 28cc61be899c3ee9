package blob

import (
	"bytes"
	"context"
	"net/http"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"errors"
	"fmt"
	"github.com/lockstream/lockstream/blob/gcstest"
	"slices"
	"sync"
	"testing"
)

// runVersionContract is the behaviour of versioned objects every Bucket
// must have. b must be empty.
func runVersionContract(t *testing.T, b Bucket) {
	t.Helper()
	ctx := context.Background()
	const name = "leases/A/v1/2026-11-23/06.json"
	if _, _, err := b.ReadVersion(ctx, name); !errors.Is(err, ErrNotExist) {
		t.Fatalf("read of a missing versioned object: %v", err)
	}
	if _, err := b.WriteVersion(ctx, name, []byte("x"), 42); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("write of a missing object at generation 42: %v", err)
	}
	g1, err := b.WriteVersion(ctx, name, []byte("one"), 0)
	if err != nil || g1 <= 0 {
		t.Fatalf("create: %d %v", g1, err)
	}
	if _, err := b.WriteVersion(ctx, name, []byte("again"), 0); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("second create: %v", err)
	}
	data, g, err := b.ReadVersion(ctx, name)
	if err != nil || string(data) != "one" || g != g1 {
		t.Fatalf("read = %q gen %d (want %d) %v", data, g, g1, err)
	}
	if sg, size, err := b.Stat(ctx, name); err != nil || sg != g1 || size != 3 {
		t.Fatalf("stat = gen %d size %d %v", sg, size, err)
	}
	g2, err := b.WriteVersion(ctx, name, []byte("two"), g1)
	if err != nil || g2 == g1 {
		t.Fatalf("replace: gen %d after %d: %v", g2, g1, err)
	}
	if _, err := b.WriteVersion(ctx, name, []byte("stale"), g1); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("replace at a stale generation: %v", err)
	}
	if err := b.DeleteVersion(ctx, name, g1); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("delete at a stale generation: %v", err)
	}
	if data, _, _ := b.ReadVersion(ctx, name); string(data) != "two" {
		t.Fatalf("after refused writes: %q", data)
	}
	// Racing compare-and-swaps from one generation: exactly one wins.
	var wg sync.WaitGroup
	wins := make([]bool, 8)
	for i := range wins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.WriteVersion(ctx, name, []byte(fmt.Sprint("racer", i)), g2)
			wins[i] = err == nil
			if err != nil && !errors.Is(err, ErrPrecondition) {
				t.Errorf("racer %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if n := len(slices.DeleteFunc(slices.Clone(wins), func(w bool) bool { return !w })); n != 1 {
		t.Fatalf("%d of 8 racing writes from one generation won, want 1", n)
	}
	_, g3, err := b.ReadVersion(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteVersion(ctx, name, g3); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if ok, _ := b.Exists(ctx, name); ok {
		t.Fatal("deleted versioned object exists")
	}
	if err := b.DeleteVersion(ctx, name, g3); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("delete of a missing object: %v", err)
	}
	// Versioned objects and bookkeeping files are not listed twice.
	if _, err := b.WriteVersion(ctx, name, []byte("three"), 0); err != nil {
		t.Fatal(err)
	}
	if names, err := b.List(ctx, "leases/"); err != nil || !slices.Equal(names, []string{name}) {
		t.Fatalf("list = %v %v", names, err)
	}

	// Copy: creates dst once, from src's content.
	if err := WriteAll(ctx, b, "tmp/src", []byte("content")); err != nil {
		t.Fatal(err)
	}
	if err := b.Copy(ctx, "tmp/src", "final/dst"); err != nil {
		t.Fatalf("copy: %v", err)
	}
	if got, err := ReadAll(ctx, b, "final/dst"); err != nil || string(got) != "content" {
		t.Fatalf("copied = %q %v", got, err)
	}
	if err := b.Copy(ctx, "tmp/src", "final/dst"); !errors.Is(err, ErrExist) {
		t.Fatalf("copy onto an existing object: %v", err)
	}
	if err := b.Copy(ctx, "tmp/missing", "final/other"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("copy of a missing object: %v", err)
	}
	// Compose: dst once, the sources' bytes in order; more sources than
	// one GCS request takes (rounds through temporary objects, which go
	// away); nothing on a missing source.
	var srcs []string
	var want []byte
	for i := range 70 {
		n := fmt.Sprintf("tmp/part-%02d", i)
		d := fmt.Appendf(nil, "line %d of part %d\n", i, i)
		if i%9 == 0 {
			d = nil // an empty part
		}
		if err := WriteAll(ctx, b, n, d); err != nil {
			t.Fatal(err)
		}
		srcs, want = append(srcs, n), append(want, d...)
	}
	before, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range [][]string{nil, srcs[:3], srcs} {
		dst := fmt.Sprintf("final/composed-%d", len(set))
		if err := b.Compose(ctx, dst, set); err != nil {
			t.Fatalf("compose of %d: %v", len(set), err)
		}
		got, err := ReadAll(ctx, b, dst)
		var exp []byte
		for _, n := range set {
			d, _ := ReadAll(ctx, b, n)
			exp = append(exp, d...)
		}
		if err != nil || !bytes.Equal(got, exp) {
			t.Fatalf("composed of %d = %d bytes %v, want %d", len(set), len(got), err, len(exp))
		}
		if err := b.Compose(ctx, dst, srcs[:1]); !errors.Is(err, ErrExist) {
			t.Fatalf("compose onto an existing object: %v", err)
		}
	}
	if err := b.Compose(ctx, "final/composed-missing", []string{srcs[0], "tmp/missing"}); err == nil {
		t.Fatal("compose with a missing source succeeded")
	}
	after, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before)+3 {
		t.Fatalf("compose left %v (had %v)", after, before)
	}
	if got, _ := ReadAll(ctx, b, "final/composed-70"); !bytes.Equal(got, want) {
		t.Fatal("the 70 parts' bytes changed")
	}
	// An object made by Create has a generation, and a gen-matched delete
	// removes it only at that generation.
	gd, _, err := b.Stat(ctx, "final/dst")
	if err != nil || gd <= 0 {
		t.Fatalf("stat of a created object: %d %v", gd, err)
	}
	if err := b.DeleteVersion(ctx, "final/dst", gd+1); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("gen-matched delete at another generation: %v", err)
	}
	if err := b.DeleteVersion(ctx, "final/dst", gd); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Exists(ctx, "final/dst"); ok {
		t.Fatal("deleted copy exists")
	}
}

func TestDirVersions(t *testing.T) {
	b, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	runVersionContract(t, b)
}

// TestGCSVersions runs the contract against fake-gcs-server behind
// gcstest's proxy, which adds the preconditions on deletes and copies that
// fake-gcs-server ignores (GCS honours them).
func TestGCSVersions(t *testing.T) {
	srv := gcstest.Start(t, testBucket)
	c, err := storage.NewClient(context.Background(), option.WithEndpoint(srv.URL()+"/storage/v1/"),
		option.WithHTTPClient(http.DefaultClient), storage.WithJSONReads())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runVersionContract(t, openTestGCS(t, "gs://"+testBucket+"/versions", c))
}
