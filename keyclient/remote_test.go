package keyclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/server"
)

const (
	testSecret   = "keyclient-test-secret-000001"
	narrowSecret = "keyclient-narrow-secret-0002"
)

var testCats = []string{"contact", "device"}

// startGroup serves a key server over store (one group) and returns its URL
// and a function that stops it (connections refused from then on).
func startGroup(t *testing.T, store keyservice.Store) (string, func()) {
	t.Helper()
	svc, err := keyservice.New(store, keyservice.Options{MasterKey: fieldcrypt.NewSecret(bytes.Repeat([]byte{3}, 32)), Categories: testCats})
	if err != nil {
		t.Fatal(err)
	}
	services, err := server.NewServices([]server.ServiceConfig{
		{Name: "pipeline", SecretSHA256: server.HashSecret(testSecret), Scopes: []string{"*"}, Categories: []string{"*"}, Mode: server.ModeDecrypt},
		{Name: "narrow", SecretSHA256: server.HashSecret(narrowSecret), Scopes: []string{"other"}, Categories: []string{"contact"}, Mode: server.ModeEncrypt},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Config{Service: svc, Services: services, Audit: io.Discard, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL, ts.Close
}

// Two groups over one store: killing the preferred one loses no call and
// costs no retry; every answer is the same keychain whichever group gave
// it; the stats say where the calls went.
func TestMultiRemoteFailoverOnRealServers(t *testing.T) {
	store := memstore.New()
	a, stopA := startGroup(t, store)
	b, _ := startGroup(t, store)
	c, err := keyclient.Open(context.Background(), a+","+b, keyclient.Options{Scope: "ingest", Secret: testSecret, CacheSize: -1, BatchWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	first, err := c.ForEncrypt(ctx, []string{"u1", "u2"}, testCats)
	if err != nil {
		t.Fatal(err)
	}
	stopA()
	for range 10 {
		again, err := c.ForEncrypt(ctx, []string{"u1", "u2"}, testCats)
		if err != nil {
			t.Fatalf("after group a stopped: %v", err)
		}
		for i := range again {
			if again[i].Subject != first[i].Subject || !bytes.Equal(again[i].Keys[0].Secret.Expose(), first[i].Keys[0].Secret.Expose()) {
				t.Fatal("group b answered another keychain")
			}
		}
	}
	if st := c.Stats(); st.Retries != 0 {
		t.Fatalf("retries %d", st.Retries)
	}
	// Group a's stop is found by the next call, which fails over to b
	// (one failure, one failover), or by a readiness probe (every second)
	// that ran first: then no call goes to a at all. Either way a is down,
	// and b answered every call.
	es, _ := c.EndpointStats()
	a0, b0 := es.Endpoints[0], es.Endpoints[1]
	if a0.Failures > 1 || a0.Calls != 1+a0.Failures || es.Failovers != a0.Failures || a0.Healthy || b0.Calls != 10 {
		t.Fatalf("stats: %s", es)
	}
	t.Log(es)
}

// A refused credential or right is permanent at the first call (no
// retries, no failover), and CheckAccess finds it before any lookup.
func TestRefusalsArePermanent(t *testing.T) {
	store := memstore.New()
	a, _ := startGroup(t, store)
	b, _ := startGroup(t, store)
	ctx := context.Background()
	for _, tc := range []struct {
		secret, scope string
		want          error
	}{
		{"wrong-secret-000000000000001", "ingest", keyclient.ErrUnauthenticated},
		{narrowSecret, "ingest", keyclient.ErrPermissionDenied},
	} {
		c, err := keyclient.Open(ctx, a+","+b, keyclient.Options{Scope: tc.scope, Secret: tc.secret, CacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.ForEncrypt(ctx, []string{"u"}, testCats)
		if !errors.Is(err, tc.want) || keyclient.IsTransient(err) || time.Since(start) > time.Second {
			t.Fatalf("%v: err %v after %v", tc.want, err, time.Since(start))
		}
		es, _ := c.EndpointStats()
		if st := c.Stats(); st.RPCs != 1 || st.Retries != 0 || es.Endpoints[1].Calls != 0 {
			t.Fatalf("%v: %+v, %s", tc.want, st, es)
		}
		c.Close()
		err = keyclient.CheckAccess(ctx, a+","+b, keyclient.Options{Scope: tc.scope, Secret: tc.secret}, testCats, time.Second)
		if !errors.Is(err, tc.want) {
			t.Fatalf("CheckAccess: %v, want %v", err, tc.want)
		}
	}
	if err := keyclient.CheckAccess(ctx, a+","+b, keyclient.Options{Scope: "ingest", Secret: testSecret}, testCats, time.Second); err != nil {
		t.Fatalf("CheckAccess with a good secret: %v", err)
	}
	// Nothing answers: unavailable, not refused.
	err := keyclient.CheckAccess(ctx, "http://127.0.0.1:1", keyclient.Options{Scope: "ingest", Secret: testSecret}, testCats, time.Second)
	if !keyclient.IsTransient(err) {
		t.Fatalf("CheckAccess with nothing listening: %v", err)
	}
}

// Failures no retry can pass are ErrConfig, not Unavailable: https to a
// plain-HTTP server, a certificate the client does not trust.
func TestTransportConfigErrorsArePermanent(t *testing.T) {
	store := memstore.New()
	plain, _ := startGroup(t, store)
	tlsSrv := httptest.NewTLSServer(nil)
	defer tlsSrv.Close()
	ctx := context.Background()
	for name, url := range map[string]string{
		"https to http":         strings.Replace(plain, "http://", "https://", 1),
		"untrusted certificate": tlsSrv.URL,
	} {
		c, err := keyclient.Open(ctx, url, keyclient.Options{Scope: "ingest", Secret: testSecret, CacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ForEncrypt(ctx, []string{"u"}, testCats)
		if !errors.Is(err, keyclient.ErrConfig) || keyclient.IsTransient(err) || c.Stats().RPCs != 1 {
			t.Errorf("%s: err %v after %d RPCs, want ErrConfig at once", name, err, c.Stats().RPCs)
		}
	}
	// Nothing listening is transient (the service may come up).
	c, _ := keyclient.Open(ctx, "http://127.0.0.1:1", keyclient.Options{Scope: "ingest", Secret: testSecret, MaxAttempts: 1})
	if _, err := c.ForEncrypt(ctx, []string{"u"}, testCats); !keyclient.IsTransient(err) {
		t.Errorf("connection refused: %v", err)
	}
}
