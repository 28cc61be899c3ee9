package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
)

const testBucket = "lockstream-test"

// newFakeGCS starts fake-gcs-server on a free loopback port with one empty
// bucket.
func newFakeGCS(t *testing.T) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Host: "127.0.0.1", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: testBucket})
	return srv
}

// newTestClient is the real storage client pointed at srv through rt (nil:
// plain transport), with a fast retry backoff.
func newTestClient(t *testing.T, srv *fakestorage.Server, rt http.RoundTripper) *storage.Client {
	t.Helper()
	if rt == nil {
		rt = http.DefaultTransport
	}
	c, err := storage.NewClient(context.Background(),
		option.WithEndpoint(srv.URL()+"/storage/v1/"),
		option.WithHTTPClient(&http.Client{Transport: rt}),
		storage.WithJSONReads())
	if err != nil {
		t.Fatal(err)
	}
	c.SetRetry(storage.WithBackoff(gax.Backoff{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2}))
	t.Cleanup(func() { c.Close() })
	return c
}

// openTestGCS opens root with a small memory limit and chunk size, so the
// contract's 3 MiB object is spilled and sent as a multi-chunk resumable
// upload while small objects go as one multipart request.
func openTestGCS(t *testing.T, root string, c *storage.Client) *GCS {
	t.Helper()
	g, err := OpenGCS(context.Background(), root, WithGCSClient(c), WithGCSMemoryLimit(64<<10), WithGCSTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	g.chunkSize = 256 << 10
	return g
}

func TestGCSContract(t *testing.T) {
	srv := newFakeGCS(t)
	c := newTestClient(t, srv, nil)
	for _, root := range []string{"gs://" + testBucket + "/some/prefix", "gs://" + testBucket + "/other"} {
		t.Run(root, func(t *testing.T) {
			g := openTestGCS(t, root, c)
			if g.Root() != root {
				t.Fatalf("Root() = %q", g.Root())
			}
			runBucketContract(t, g)
		})
	}
	// Names are stored below the root prefix, and roots do not see each
	// other's objects.
	objs, _, err := srv.ListObjects(testBucket, "some/prefix/", "", false)
	if err != nil || len(objs) != 5 {
		t.Fatalf("server has %d objects under some/prefix/: %v", len(objs), err)
	}
	if o, err := srv.GetObject(testBucket, "some/prefix/race"); err != nil || string(o.Content) != "first" {
		t.Fatalf("server object: %v", err)
	}
	// A whole-bucket root lists both prefixes.
	g := openTestGCS(t, "gs://"+testBucket, c)
	names, err := g.List(context.Background(), "")
	if err != nil || len(names) != 10 || !strings.HasPrefix(names[0], "other/") {
		t.Fatalf("bucket root list = %v %v", names, err)
	}
}

func TestParseGCSRoot(t *testing.T) {
	for root, want := range map[string][2]string{
		"gs://b":           {"b", ""},
		"gs://b/":          {"b", ""},
		"gs://b/p":         {"b", "p/"},
		"gs://b/p/q/":      {"b", "p/q/"},
		"gs:///p":          {"", "error"},
		"gs://b/p/../q":    {"", "error"},
		"gs://b//p":        {"", "error"},
		"file://somewhere": {"", "error"},
	} {
		b, p, err := ParseGCSRoot(root)
		if want[1] == "error" {
			if err == nil {
				t.Errorf("%s: accepted", root)
			}
			continue
		}
		if err != nil || b != want[0] || p != want[1] {
			t.Errorf("%s: %q %q %v", root, b, p, err)
		}
	}
}

// blob.Open dispatches gs:// roots to the GCS backend, whose default client
// honours STORAGE_EMULATOR_HOST.
func TestOpenGCSEmulatorHost(t *testing.T) {
	srv := newFakeGCS(t)
	u, _ := url.Parse(srv.URL())
	t.Setenv("STORAGE_EMULATOR_HOST", u.Host)
	sharedMu.Lock()
	sharedClient = nil // a client made before Setenv would not see it
	sharedMu.Unlock()
	ctx := context.Background()
	b, err := Open(ctx, "gs://"+testBucket+"/env")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteAll(ctx, b, "a/b", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if o, err := srv.GetObject(testBucket, "env/a/b"); err != nil || string(o.Content) != "hello" {
		t.Fatalf("object on the emulator: %v", err)
	}
}

// The corrupt-upload fault is real (without a checksum the server stores
// the damaged bytes) and Create's CRC32C makes the server refuse it.
func TestGCSCorruptUploadRejected(t *testing.T) {
	srv := newFakeGCS(t)
	ft := NewFaultyTransport(nil, FaultConfig{CorruptUploadEvery: 1})
	c := newTestClient(t, srv, ft)
	ctx := context.Background()
	data := []byte("0123456789 the object's bytes 0123456789")

	// Control: a plain upload without a checksum is corrupted silently.
	w := c.Bucket(testBucket).Object("control").NewWriter(ctx)
	w.DisableAutoChecksum = true
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatalf("control upload: %v", err)
	}
	if o, err := srv.GetObject(testBucket, "control"); err != nil || bytes.Equal(o.Content, data) {
		t.Fatalf("control object was not corrupted (%v): the fault injects nothing", err)
	}

	g := openTestGCS(t, "gs://"+testBucket+"/p", c)
	big := bytes.Repeat(data, 20_000) // 800 kB: spilled, resumable chunks
	for name, d := range map[string][]byte{"small": data, "big": big} {
		if err := WriteAll(ctx, g, name, d); err == nil {
			t.Fatalf("%s: corrupted upload accepted", name)
		}
		if _, err := srv.GetObject(testBucket, "p/"+name); err == nil {
			t.Fatalf("%s: corrupted upload left an object", name)
		}
	}
	if s := ft.Stats(); s.Corrupts < 3 {
		t.Fatalf("stats %+v: corruption not exercised", s)
	}
}

// An upload whose every attempt is torn fails (at its deadline) and leaves
// nothing.
func TestGCSTornUploadLeavesNothing(t *testing.T) {
	srv := newFakeGCS(t)
	ft := NewFaultyTransport(nil, FaultConfig{TornUploadEvery: 1})
	g := openTestGCS(t, "gs://"+testBucket+"/p", newTestClient(t, srv, ft))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, d := range [][]byte{[]byte("small object"), bytes.Repeat([]byte("x"), 600<<10)} {
		if err := WriteAll(ctx, g, "torn", d); err == nil {
			t.Fatal("torn upload succeeded")
		}
		if _, err := srv.GetObject(testBucket, "p/torn"); err == nil {
			t.Fatal("torn upload left an object")
		}
	}
	if s := ft.Stats(); s.Torn < 2 {
		t.Fatalf("stats %+v: tearing not exercised", s)
	}
}

// TestGCSSpillLeavesNoFile: a writer that spilled to disk keeps no named
// file in the temporary directory, even before Close, so a process killed
// mid-write (no Close, no Abort) leaves nothing there; the object is still
// uploaded whole.
func TestGCSSpillLeavesNoFile(t *testing.T) {
	srv := newFakeGCS(t)
	tmp := t.TempDir()
	g, err := OpenGCS(context.Background(), "gs://"+testBucket+"/p", WithGCSClient(newTestClient(t, srv, nil)),
		WithGCSMemoryLimit(64<<10), WithGCSTempDir(tmp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, err := g.Create(ctx, "spilled")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 20_000) // 320 kB: spilled
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if w.(*gcsWriter).spill == nil {
		t.Fatal("the writer did not spill: the test's premise is gone")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("a spilling writer leaves %d file(s) in the temporary directory, e.g. %s", len(left), left[0].Name())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAll(ctx, g, "spilled")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v; want the %d written", len(got), err, len(data))
	}
}

// TestGCSFaults writes 200 objects through 20% 503s, lost responses, torn
// and corrupted uploads, some onto names that already exist and some by two
// racing writers. Every create either succeeds with exactly its bytes
// stored, or fails and leaves no object; an existing object is never
// overwritten.
func TestGCSFaults(t *testing.T) {
	srv := newFakeGCS(t)
	ft := NewFaultyTransport(nil, FaultConfig{
		Rate5xx:            0.20,
		RateLostResponse:   0.05,
		TornUploadEvery:    7,
		CorruptUploadEvery: 11,
		Seed:               1,
	})
	g := openTestGCS(t, "gs://"+testBucket+"/f", newTestClient(t, srv, ft))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	content := func(i, writer int) []byte {
		d := fmt.Appendf(nil, "object %d by writer %d\n", i, writer)
		if i%25 == 3 {
			d = bytes.Repeat(d, 30_000) // ~700 kB: spilled, 3 resumable chunks
		}
		return d
	}
	name := func(i int) string { return fmt.Sprintf("datasets/T/v1/2026-11-23/06/part-%03d", i) }
	existing := func(i int) bool { return i%10 == 0 }
	racing := func(i int) bool { return i%10 == 5 }
	for i := range 200 {
		if existing(i) {
			srv.CreateObject(fakestorage.Object{
				ObjectAttrs: fakestorage.ObjectAttrs{BucketName: testBucket, Name: "f/" + name(i)},
				Content:     []byte("published before"),
			})
		}
	}

	// errs[i][w] is writer w's result for object i (writer 1 only races).
	errs := make([][2]error, 200)
	var wg sync.WaitGroup
	work := make(chan [2]int)
	for range 4 {
		wg.Go(func() {
			for job := range work {
				errs[job[0]][job[1]] = WriteAll(ctx, g, name(job[0]), content(job[0], job[1]))
			}
		})
	}
	for i := range 200 {
		work <- [2]int{i, 0}
		if racing(i) {
			work <- [2]int{i, 1}
		}
	}
	close(work)
	wg.Wait()

	ok := 0
	for i := range 200 {
		o, gerr := srv.GetObject(testBucket, "f/"+name(i))
		switch {
		case existing(i):
			if gerr != nil || string(o.Content) != "published before" {
				t.Errorf("%d: existing object overwritten or lost (%v)", i, gerr)
			}
			if errs[i][0] == nil {
				t.Errorf("%d: create over an existing object succeeded", i)
			}
		case gerr != nil:
			// No object: nobody may have been told it was written.
			for w, err := range errs[i] {
				if err == nil && (w == 0 || racing(i)) {
					t.Errorf("%d: writer %d succeeded but there is no object", i, w)
				}
			}
		default:
			// An object: exactly the bytes of a writer that succeeded, and
			// only one writer succeeded.
			winners := 0
			for w, err := range errs[i] {
				if w == 1 && !racing(i) {
					continue
				}
				if err == nil {
					winners++
					if !bytes.Equal(o.Content, content(i, w)) {
						t.Errorf("%d: stored %d bytes, not writer %d's %d", i, len(o.Content), w, len(content(i, w)))
					}
				}
			}
			if winners != 1 {
				t.Errorf("%d: %d writers succeeded for one object (errs %v)", i, winners, errs[i])
			}
			ok++
		}
	}
	// Reading back through the faulty client sees the same bytes.
	for i := range 200 {
		if errs[i][0] != nil {
			continue
		}
		if got, err := ReadAll(ctx, g, name(i)); err != nil || !bytes.Equal(got, content(i, 0)) {
			t.Errorf("%d: read back %d bytes, %v", i, len(got), err)
		}
	}
	names, err := g.List(ctx, "")
	if err != nil || len(names) != ok+20 || !slices.IsSorted(names) {
		t.Errorf("list: %d names (want %d), %v", len(names), ok+20, err)
	}
	s := ft.Stats()
	t.Logf("%d of 180 new objects written; faults: %+v", ok, s)
	if s.Injected5xx == 0 || s.LostResponses == 0 || s.Torn == 0 || s.Corrupts == 0 {
		t.Fatalf("not every fault was exercised: %+v", s)
	}
	var failed []string
	for i := range 200 {
		if err := errs[i][0]; err != nil && !existing(i) && !errors.Is(err, ErrExist) {
			failed = append(failed, fmt.Sprintf("%d: %v", i, err))
		}
	}
	t.Logf("failed creates (besides ErrExist): %d", len(failed))
	for _, f := range failed[:min(5, len(failed))] {
		t.Log(f)
	}
}

// An unreachable GCS fails each operation, after the shared client's
// attempts (lists, metadata) or at the upload's deadline (writes), instead
// of being retried until the caller's context ends: a pipeline's never
// does, and an ingest whose storage client pointed at a closed endpoint
// retried one upload for 27 minutes before this.
func TestGCSUnreachableFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // connections are refused now: an error the client retries
	t.Setenv("STORAGE_EMULATOR_HOST", addr)
	old := sharedRetry
	sharedRetry = append(slices.Clone(old), storage.WithBackoff(gax.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2}))
	t.Cleanup(func() { sharedRetry = old })
	ctx := context.Background()
	g, err := OpenGCS(ctx, "gs://"+testBucket+"/p", WithGCSUploadTimeout(time.Second), WithGCSMemoryLimit(64<<10), WithGCSTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	go func() {
		// One request, then a spilled object (a resumable upload).
		for _, d := range [][]byte{[]byte("small object"), bytes.Repeat([]byte("x"), 200<<10)} {
			errs <- WriteAll(ctx, g, "obj", d)
		}
		_, err := g.List(ctx, "")
		errs <- err
		_, err = g.Exists(ctx, "obj")
		errs <- err
	}()
	want := []string{"upload not finished within 1s", "upload not finished within 1s", "after 10 attempts", "after 10 attempts"}
	for i, w := range want {
		select {
		case err := <-errs:
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("operation %d: err %v, want one saying %q", i, err, w)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("operation %d still retrying after 2 minutes", i)
		}
	}
}

// The process-wide client follows STORAGE_EMULATOR_HOST: one client while
// it stays the same, a new one when it changes.
func TestGCSSharedClientFollowsEmulatorHost(t *testing.T) {
	ctx := context.Background()
	open := func(root string) *GCS {
		t.Helper()
		g, err := OpenGCS(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	t.Setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:1")
	a, a2 := open("gs://b/p"), open("gs://c/q")
	if a.client != a2.client {
		t.Fatal("two clients for one emulator host")
	}
	t.Setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:2")
	if b := open("gs://b/p"); b.client == a.client {
		t.Fatal("the client of the old STORAGE_EMULATOR_HOST was kept")
	}
}
