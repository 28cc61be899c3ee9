package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/lockstream/lockstream/blob"
)

// These tests run the GCS backend as production does — blob.Open("gs://…")
// with the default client configured by STORAGE_EMULATOR_HOST — in a child
// process (the test binary re-run with LOCKSTREAM_GCS_CHILD set), against
// fake-gcs-server behind blob's fault-injecting proxy.

const gcsBucket = "lockstream-it"

func startFakeGCS(t *testing.T) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Host: "127.0.0.1", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: gcsBucket})
	return srv
}

func gcsChild(t *testing.T, proxy *httptest.Server, mode string) *exec.Cmd {
	t.Helper()
	u, _ := url.Parse(proxy.URL)
	cmd := exec.Command(os.Args[0], "-test.run=^TestGCSChild$", "-test.v")
	cmd.Env = append(os.Environ(), "STORAGE_EMULATOR_HOST="+u.Host, "LOCKSTREAM_GCS_CHILD="+mode)
	return cmd
}

func gcsContent(i int) []byte {
	d := fmt.Appendf(nil, "object %d\n", i)
	if i%10 == 7 {
		d = bytes.Repeat(d, 2_000_000) // ~18 MB: spilled, 2 resumable chunks
	}
	return d
}

// TestGCSChild is the child process's body; without LOCKSTREAM_GCS_CHILD it
// does nothing.
func TestGCSChild(t *testing.T) {
	mode := os.Getenv("LOCKSTREAM_GCS_CHILD")
	if mode == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := blob.Open(ctx, "gs://"+gcsBucket+"/it")
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "write":
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range 40 {
			wg.Go(func() {
				err := blob.WriteAll(ctx, b, fmt.Sprintf("obj-%02d", i), gcsContent(i))
				mu.Lock()
				defer mu.Unlock()
				fmt.Printf("RESULT %d %v\n", i, err)
			})
		}
		wg.Wait()
	case "crash":
		// 40 MB: three 16 MiB chunks; the parent kills us mid-upload.
		err := blob.WriteAll(ctx, b, "crashed", bytes.Repeat([]byte("c"), 40<<20))
		t.Fatalf("upload finished (%v): the parent should have killed us", err)
	default:
		t.Fatalf("unknown child mode %q", mode)
	}
}

// Writes through 10% 503s, lost responses and torn and corrupted uploads:
// every object is either written exactly or reported failed and absent.
func TestGCSThroughFaultProxy(t *testing.T) {
	srv := startFakeGCS(t)
	target, _ := url.Parse(srv.URL())
	ft := blob.NewFaultyTransport(nil, blob.FaultConfig{
		Rate5xx: 0.10, RateLostResponse: 0.05, TornUploadEvery: 9, CorruptUploadEvery: 13, Seed: 7,
	})
	proxy := httptest.NewServer(blob.NewFaultProxy(target, ft))
	defer proxy.Close()

	out, err := gcsChild(t, proxy, "write").CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	results := map[int]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var i int
		if rest, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			idx, msg, _ := strings.Cut(rest, " ")
			fmt.Sscan(idx, &i)
			results[i] = msg
		}
	}
	if len(results) != 40 {
		t.Fatalf("child reported %d results:\n%s", len(results), out)
	}
	written := 0
	for i := range 40 {
		o, gerr := srv.GetObject(gcsBucket, fmt.Sprintf("it/obj-%02d", i))
		switch {
		case results[i] == "<nil>":
			if gerr != nil || !bytes.Equal(o.Content, gcsContent(i)) {
				t.Errorf("%d: reported written, but stored %d bytes (%v)", i, len(o.Content), gerr)
			}
			written++
		case gerr == nil:
			t.Errorf("%d: reported %q, but an object of %d bytes exists", i, results[i], len(o.Content))
		}
	}
	s := ft.Stats()
	t.Logf("%d of 40 written; faults %+v", written, s)
	if s.Injected5xx == 0 || s.Torn == 0 || s.Corrupts == 0 || written < 20 {
		t.Fatalf("faults not exercised or too few writes: %d written, %+v", written, s)
	}
}

// A writer process killed in the middle of a resumable upload (one 16 MiB
// chunk already on the server) leaves no object.
func TestGCSCrashedWriterLeavesNothing(t *testing.T) {
	srv := startFakeGCS(t)
	target, _ := url.Parse(srv.URL())
	fwd := blob.NewFaultProxy(target, blob.NewFaultyTransport(nil, blob.FaultConfig{}))
	chunks := 0
	var mu sync.Mutex
	second := make(chan struct{})
	release := make(chan struct{})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("upload_id") != "" { // a chunk (the Go client POSTs them)
			mu.Lock()
			chunks++
			n := chunks
			mu.Unlock()
			if n == 2 {
				close(second)
				<-release
				http.Error(w, "gone", http.StatusServiceUnavailable)
				return
			}
		}
		fwd.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	defer close(release)

	cmd := gcsChild(t, proxy, "crash")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-second:
	case err := <-exited:
		t.Fatalf("the child exited (%v) before its second chunk:\n%s", err, out.String())
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the child never sent a second chunk:\n%s", out.String())
	}
	cmd.Process.Kill()
	<-exited
	if _, err := srv.GetObject(gcsBucket, "it/crashed"); err == nil {
		t.Fatal("a killed writer left an object")
	}
	objs, _, err := srv.ListObjects(gcsBucket, "", "", false)
	if err != nil || len(objs) != 0 {
		t.Fatalf("bucket lists %d objects after a crash (%v)", len(objs), err)
	}
}
