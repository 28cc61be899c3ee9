package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/transforms"
)

// scenarioKeySecret is the secret of the one service of scenarioKeyServer
// (encrypt and decrypt in every scope); tests put it in
// $LOCKSTREAM_KEYS_SECRET for the pipelines.
const scenarioKeySecret = "scenario-pipeline-secret-0001"

// scenarioKeyServer is a real key server (bolt store) on a fixed loopback
// port that a test can stop and start again, and slow down.
type scenarioKeyServer struct {
	addr    string
	handler http.Handler
	delay   atomic.Pointer[func() time.Duration]
	log     *lockedBuffer
	latency latencyLog

	mu  sync.Mutex
	srv *http.Server
}

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// startScenarioKeyServer starts the server with cfg (its Service, Services,
// Audit and Log are set here) over a bolt store, wrapped by wrap if given.
func startScenarioKeyServer(t *testing.T, cfg server.Config, wrap func(keyservice.Store) keyservice.Store) *scenarioKeyServer {
	t.Helper()
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	var st keyservice.Store = bolt
	if wrap != nil {
		st = wrap(st)
	}
	svc, err := keyservice.New(st, keyservice.Options{MasterKey: storetest.MasterKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	services, err := server.NewServices([]server.ServiceConfig{
		{Name: "pipeline", SecretSHA256: server.HashSecret(scenarioKeySecret), Scopes: []string{"*"}, Categories: []string{"*"}, Mode: server.ModeDecrypt},
	})
	if err != nil {
		t.Fatal(err)
	}
	k := &scenarioKeyServer{log: &lockedBuffer{}}
	cfg.Service, cfg.Services, cfg.Audit, cfg.Log = svc, services, k.log, slog.New(slog.NewTextHandler(k.log, nil))
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	inner := s.Handler()
	k.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if d := k.delay.Load(); d != nil {
			time.Sleep((*d)())
		}
		inner.ServeHTTP(w, r)
		k.latency.add(time.Since(start))
	})
	k.addr = "127.0.0.1:" + strconv.Itoa(storetest.FreePort(t))
	k.start(t)
	t.Cleanup(k.stop)
	t.Setenv(transforms.KeysSecretEnv, scenarioKeySecret)
	return k
}

func (k *scenarioKeyServer) url() string { return "http://" + k.addr }

// start listens on the server's address again (retrying while the port is
// still being released).
func (k *scenarioKeyServer) start(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if l, err = net.Listen("tcp", k.addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key server cannot listen on %s again: %v", k.addr, err)
		}
	}
	srv := &http.Server{Handler: k.handler}
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			io.WriteString(k.log, "serve: "+err.Error()+"\n")
		}
	}()
}

// stop closes the listener and every connection: the service is down.
func (k *scenarioKeyServer) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		k.srv.Close()
		k.srv = nil
	}
}

// latencyLog keeps the server's request latencies, to compare windows.
type latencyLog struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencyLog) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

// drain returns the p99 of the latencies since the last drain (0 if none)
// and how many there were.
func (l *latencyLog) drain() (p99 time.Duration, n int) {
	l.mu.Lock()
	d := l.d
	l.d = nil
	l.mu.Unlock()
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*99/100], len(d)
}

// slowStore makes every store call take d: a server whose work takes time
// (its admission control then bounds its capacity).
type slowStore struct {
	keyservice.Store
	d time.Duration
}

func (s slowStore) Get(ctx context.Context, keys []string) ([]keyservice.Item, error) {
	time.Sleep(s.d)
	return s.Store.Get(ctx, keys)
}

func (s slowStore) Put(ctx context.Context, key string, value []byte, rev uint64) (keyservice.Item, error) {
	time.Sleep(s.d)
	return s.Store.Put(ctx, key, value, rev)
}

// slow makes every request wait d() first (nil: no delay).
func (k *scenarioKeyServer) slow(d func() time.Duration) {
	if d == nil {
		k.delay.Store(nil)
		return
	}
	k.delay.Store(&d)
}
