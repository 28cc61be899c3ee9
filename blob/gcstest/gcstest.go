// Package gcstest runs fake-gcs-server for tests, behind a proxy that
// enforces the preconditions fake-gcs-server v1.56 ignores: ifGenerationMatch
// on object deletes and on the destination of copies and rewrites (GCS
// honours both; lockstream's leases and publication rely on them). The
// proxy serializes every request that changes objects, so its check and the
// change are atomic for the clients it serves, as they are on GCS.
package gcstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// Server is a fake-gcs-server behind the precondition proxy.
type Server struct {
	Fake  *fakestorage.Server
	Proxy *httptest.Server
}

// URL is the proxy's base URL ("http://127.0.0.1:port").
func (s *Server) URL() string { return s.Proxy.URL }

// Host is the proxy's host:port, for STORAGE_EMULATOR_HOST.
func (s *Server) Host() string { u, _ := url.Parse(s.Proxy.URL); return u.Host }

// Start starts fake-gcs-server with the given buckets and the proxy in
// front of it; both stop when t ends.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{Host: "127.0.0.1", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Stop)
	for _, b := range buckets {
		fake.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	target, _ := url.Parse(fake.URL())
	proxy := httptest.NewServer(Handler(fake, target))
	t.Cleanup(proxy.Close)
	return &Server{Fake: fake, Proxy: proxy}
}

// Handler is the precondition proxy in front of fake (served at target).
func Handler(fake *fakestorage.Server, target *url.URL) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			rp.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if bucket, object, ok := checkedObject(r); ok {
			want, err := strconv.ParseInt(r.URL.Query().Get("ifGenerationMatch"), 10, 64)
			if err != nil {
				http.Error(w, "bad ifGenerationMatch", http.StatusBadRequest)
				return
			}
			var gen int64
			if o, err := fake.GetObject(bucket, object); err == nil {
				gen = o.Generation
			}
			if gen != want {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusPreconditionFailed)
				fmt.Fprintf(w, `{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[{"reason":"conditionNotMet","message":"ifGenerationMatch %d, generation %d"}]}}`, want, gen)
				return
			}
		}
		if bucket, object, ok := composed(r); ok {
			// fake-gcs-server answers a compose of a missing source with a
			// 500, which clients retry; GCS answers 404.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct{ SourceObjects []struct{ Name string } }
			if err := json.Unmarshal(body, &req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, src := range req.SourceObjects {
				if _, err := fake.GetObject(bucket, src.Name); err != nil {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusNotFound)
					fmt.Fprintf(w, `{"error":{"code":404,"message":"Object %s (source of %s) not found.","errors":[{"reason":"notFound"}]}}`, src.Name, object)
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	})
}

// composed returns the bucket and destination of a compose request.
func composed(r *http.Request) (bucket, object string, ok bool) {
	seg := strings.Split(strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), "/storage/v1"), "/"), "/")
	if r.Method != http.MethodPost || len(seg) != 5 || seg[0] != "b" || seg[2] != "o" || seg[4] != "compose" {
		return "", "", false
	}
	b, _ := url.PathUnescape(seg[1])
	o, _ := url.PathUnescape(seg[3])
	return b, o, true
}

// checkedObject returns the object whose generation a request's
// ifGenerationMatch applies to, for the requests fake-gcs-server does not
// check itself: DELETE .../b/B/o/O, POST .../o/S/rewriteTo|copyTo/b/B/o/O
// and POST .../b/B/o/O/compose.
func checkedObject(r *http.Request) (bucket, object string, ok bool) {
	if r.URL.Query().Get("ifGenerationMatch") == "" {
		return "", "", false
	}
	p := r.URL.EscapedPath()
	p = strings.TrimPrefix(p, "/storage/v1")
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	unesc := func(s string) string { u, _ := url.PathUnescape(s); return u }
	switch {
	case r.Method == http.MethodDelete && len(seg) == 4 && seg[0] == "b" && seg[2] == "o":
		return unesc(seg[1]), unesc(seg[3]), true
	case r.Method == http.MethodPost && len(seg) == 9 && seg[0] == "b" && seg[2] == "o" && (seg[4] == "rewriteTo" || seg[4] == "copyTo") && seg[5] == "b" && seg[7] == "o":
		return unesc(seg[6]), unesc(seg[8]), true
	case r.Method == http.MethodPost && len(seg) == 5 && seg[0] == "b" && seg[2] == "o" && seg[4] == "compose":
		return unesc(seg[1]), unesc(seg[3]), true
	}
	return "", "", false
}
