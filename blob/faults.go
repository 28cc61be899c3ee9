package blob

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
)

// FaultConfig says which faults a FaultyTransport injects. Zero values
// inject nothing.
type FaultConfig struct {
	// Rate5xx is the share of requests (0..1) answered 503 without reaching
	// the server.
	Rate5xx float64
	// RateLostResponse is the share of requests that reach the server and
	// take effect, but whose response is replaced by a 503: the client
	// cannot tell it from Rate5xx and retries something that happened.
	RateLostResponse float64
	// TornUploadEvery tears one in N upload requests (POST/PUT to
	// /upload/...): the server receives the first half of the body, then
	// the connection is dropped; the client sees "connection reset".
	TornUploadEvery int
	// CorruptUploadEvery flips one byte of the object data in one in N
	// upload requests that carry object data (multipart uploads and
	// resumable chunks). The request is otherwise well-formed, so only a
	// checksum can catch it.
	CorruptUploadEvery int
	// Seed makes the random choices repeatable.
	Seed uint64
}

// FaultStats counts what a FaultyTransport did.
type FaultStats struct {
	Requests, Uploads                          int
	Injected5xx, LostResponses, Torn, Corrupts int
}

// FaultyTransport is an http.RoundTripper that injects the faults of a
// FaultConfig in front of a real one. Give it to the storage client with
// option.WithHTTPClient(&http.Client{Transport: ft}), or put it in a
// reverse proxy with NewFaultProxy. Safe for concurrent use.
type FaultyTransport struct {
	base http.RoundTripper
	cfg  FaultConfig

	mu    sync.Mutex
	rng   *rand.Rand
	stats FaultStats
	on    bool
}

// NewFaultyTransport wraps base (http.DefaultTransport if nil).
func NewFaultyTransport(base http.RoundTripper, cfg FaultConfig) *FaultyTransport {
	if base == nil {
		base = http.DefaultTransport
	}
	return &FaultyTransport{base: base, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6c6f636b)), on: true}
}

// SetEnabled turns fault injection on (the default) or off, e.g. to verify
// results through the same client without faults.
func (t *FaultyTransport) SetEnabled(on bool) {
	t.mu.Lock()
	t.on = on
	t.mu.Unlock()
}

// Stats returns the counts so far.
func (t *FaultyTransport) Stats() FaultStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

type faultKind int

const (
	faultNone faultKind = iota
	fault5xx
	faultLost
	faultTear
	faultCorrupt
)

func isUpload(req *http.Request) bool {
	return (req.Method == http.MethodPost || req.Method == http.MethodPut) &&
		strings.Contains(req.URL.Path, "/upload/")
}

// carriesData reports whether an upload request carries object data (as
// opposed to starting a resumable session).
func carriesData(req *http.Request) bool {
	q := req.URL.Query()
	return q.Get("uploadType") == "multipart" || q.Get("upload_id") != "" || req.Method == http.MethodPut
}

func (t *FaultyTransport) decide(req *http.Request) faultKind {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Requests++
	if !t.on {
		return faultNone
	}
	if isUpload(req) {
		t.stats.Uploads++
		if n := t.cfg.TornUploadEvery; n > 0 && t.stats.Uploads%n == 0 {
			t.stats.Torn++
			return faultTear
		}
		if n := t.cfg.CorruptUploadEvery; n > 0 && carriesData(req) && t.stats.Uploads%n == n/2 {
			return faultCorrupt // counted once a byte was actually flipped
		}
	}
	r := t.rng.Float64()
	switch {
	case r < t.cfg.Rate5xx:
		t.stats.Injected5xx++
		return fault5xx
	case r < t.cfg.Rate5xx+t.cfg.RateLostResponse:
		t.stats.LostResponses++
		return faultLost
	}
	return faultNone
}

// RoundTrip implements http.RoundTripper.
func (t *FaultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch t.decide(req) {
	case fault5xx:
		if req.Body != nil {
			req.Body.Close()
		}
		return unavailable(req), nil
	case faultLost:
		resp, err := t.base.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return unavailable(req), nil
	case faultTear:
		body, err := readBody(req)
		if err != nil {
			return nil, err
		}
		torn := req.Clone(req.Context())
		torn.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body[:len(body)/2]), errReader{}))
		torn.GetBody = nil
		torn.ContentLength = int64(len(body))
		if resp, err := t.base.RoundTrip(torn); err == nil {
			// The server answered before reading the whole body (it does
			// not for uploads); the connection is gone all the same.
			resp.Body.Close()
		}
		return nil, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	case faultCorrupt:
		body, err := readBody(req)
		if err != nil {
			return nil, err
		}
		if i := dataOffset(req, body); i >= 0 {
			body[i] ^= 0x20
			t.mu.Lock()
			t.stats.Corrupts++
			t.mu.Unlock()
		}
		bad := req.Clone(req.Context())
		bad.Body = io.NopCloser(bytes.NewReader(body))
		bad.GetBody = nil
		bad.ContentLength = int64(len(body))
		return t.base.RoundTrip(bad)
	}
	return t.base.RoundTrip(req)
}

// dataOffset returns the index of an object data byte in an upload body,
// or -1 if it has none.
func dataOffset(req *http.Request, body []byte) int {
	if req.URL.Query().Get("uploadType") != "multipart" {
		if len(body) == 0 {
			return -1
		}
		return len(body) / 2
	}
	// multipart/related: JSON metadata part, then the media part; a part's
	// body follows its headers' blank line, and compact JSON has no CRLF.
	sep := []byte("\r\n\r\n")
	i := bytes.Index(body, sep)
	if i < 0 {
		return -1
	}
	j := bytes.Index(body[i+4:], sep)
	if j < 0 {
		return -1
	}
	start := i + 4 + j + 4
	end := bytes.LastIndex(body, []byte("\r\n--"))
	if end <= start {
		return -1 // empty object
	}
	return start + (end-start)/2
}

func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil {
		return nil, nil
	}
	defer req.Body.Close()
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("faulty transport: read request body: %w", err)
	}
	return b, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) {
	return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
}

func unavailable(req *http.Request) *http.Response {
	const msg = `{"error":{"code":503,"message":"injected fault: service unavailable"}}`
	return &http.Response{
		Status:        "503 Service Unavailable",
		StatusCode:    http.StatusServiceUnavailable,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(msg)),
		ContentLength: int64(len(msg)),
		Request:       req,
	}
}

// NewFaultProxy returns a reverse proxy to target (e.g. a fake-gcs-server
// URL) that injects faults through ft, for clients in other processes
// (point STORAGE_EMULATOR_HOST at it). A torn or failed upstream request
// reaches the client as a 502. Resumable upload sessions go through the
// proxy too when the server builds its Location header from the request's
// Host (fake-gcs-server does, unless Options.ExternalURL is set).
func NewFaultProxy(target *url.URL, ft *FaultyTransport) http.Handler {
	p := httputil.NewSingleHostReverseProxy(target)
	p.Transport = ft
	p.ErrorLog = log.New(io.Discard, "", 0) // injected faults are expected; the client sees a 502
	return p
}
