package rootid

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/lockstream/lockstream/blob"
)

func TestRootIDCreatedOnceAndKept(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := blob.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(ctx, b); !errors.Is(err, blob.ErrNotExist) {
		t.Fatalf("Read of a root without an id: %v, want ErrNotExist", err)
	}
	if ok, _ := b.Exists(ctx, Name); ok {
		t.Fatal("Read created the id")
	}
	id, err := Get(ctx, b)
	if err != nil || !valid([]byte(id)) {
		t.Fatalf("Get = %q, %v", id, err)
	}
	data, err := blob.ReadAll(ctx, b, Name)
	if err != nil || string(data) != id {
		t.Fatalf("%s holds %q, %v; want %q", Name, data, err, id)
	}
	// Another opening of the same directory sees the same id.
	b2, _ := blob.OpenDir(dir)
	for _, get := range []func(context.Context, blob.Bucket) (string, error){Get, Read} {
		if again, err := get(ctx, b2); err != nil || again != id {
			t.Fatalf("second look: %q, %v; want %q", again, err, id)
		}
	}
	// Another root gets another id.
	other, _ := blob.OpenDir(t.TempDir())
	if id2, err := Get(ctx, other); err != nil || id2 == id {
		t.Fatalf("a second root: %q, %v (first %q)", id2, err, id)
	}
}

func TestRootIDConcurrentCreators(t *testing.T) {
	ctx := context.Background()
	for round := range 20 {
		b, err := blob.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, 8)
		errs := make([]error, 8)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ids[i], errs[i] = Get(ctx, b)
			}()
		}
		close(start)
		wg.Wait()
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] || !valid([]byte(ids[i])) {
				t.Fatalf("round %d: caller %d got %q, %v; caller 0 got %q", round, i, ids[i], errs[i], ids[0])
			}
		}
	}
}

func TestRootIDInvalidContent(t *testing.T) {
	ctx := context.Background()
	for _, content := range []string{"", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef", "0123456789abcdef0123456789abcdef0", "0123456789abcdef0123456789abcdeg"} {
		b, err := blob.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := blob.WriteAll(ctx, b, Name, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if id, err := Get(ctx, b); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%q: Get = %q, %v; want ErrInvalid", content, id, err)
		}
	}
	b, _ := blob.OpenDir(t.TempDir())
	const id = "0123456789abcdef0123456789abcdef"
	if err := blob.WriteAll(ctx, b, Name, []byte(id+"\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := Get(ctx, b); err != nil || got != id {
		t.Fatalf("hand-written id with a newline: %q, %v", got, err)
	}
}
