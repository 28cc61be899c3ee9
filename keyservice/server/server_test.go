package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
	"github.com/lockstream/lockstream/keyservice/boltstore"
)

const (
	secretEnc   = "encrypt-service-secret-0001"
	secretDec   = "decrypt-service-secret-0002"
	secretAdmin = "admin-service-secret-000003"
	secretWide  = "wide-service-secret-00000004"
	scope       = "events"
)

var testCats = []string{"contact", "location", "device"}

func testServices(t testing.TB) *Services {
	t.Helper()
	s, err := NewServices([]ServiceConfig{
		{Name: "ingest", SecretSHA256: HashSecret(secretEnc), Scopes: []string{scope}, Categories: []string{"contact", "location"}, Mode: ModeEncrypt},
		{Name: "view", Secret: secretDec, Scopes: []string{scope}, Categories: []string{"*"}, Mode: ModeDecrypt},
		{Name: "ops", Secret: secretAdmin, Categories: []string{"*"}, Mode: ModeNone, Admin: true},
		{Name: "wide", Secret: secretWide, Scopes: []string{"*"}, Categories: []string{"*"}, Mode: ModeDecrypt},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer is a goroutine-safe bytes.Buffer (audit and log sinks).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type env struct {
	url   string
	srv   *httptest.Server
	svc   *keyservice.Service
	audit *syncBuffer
	log   *syncBuffer
	dir   string
	mk    fieldcrypt.Secret
}

func masterKey(t testing.TB) fieldcrypt.Secret {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fieldcrypt.NewSecret(b)
}

type envOpt func(*Config, *keyservice.Options)

// startEnv runs a real server on loopback over a bolt store in dir.
func startEnv(t testing.TB, dir string, mk fieldcrypt.Secret, wrap func(keyservice.Store) keyservice.Store, opts ...envOpt) *env {
	t.Helper()
	st, err := boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var store keyservice.Store = st
	if wrap != nil {
		store = wrap(st)
	}
	ko := keyservice.Options{MasterKey: mk, Categories: testCats, MaxBatch: 1000}
	cfg := Config{Services: testServices(t)}
	for _, o := range opts {
		o(&cfg, &ko)
	}
	svc, err := keyservice.New(store, ko)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{svc: svc, audit: &syncBuffer{}, log: &syncBuffer{}, dir: dir, mk: mk}
	cfg.Service, cfg.Audit, cfg.Log = svc, e.audit, slog.New(slog.NewTextHandler(e.log, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(s.Handler())
	e.srv.EnableHTTP2 = true
	e.srv.StartTLS()
	e.url = e.srv.URL
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	if e.srv != nil {
		e.srv.Close()
		_ = e.svc.Close()
		e.srv = nil
	}
}

func (e *env) client(secret string, opts ...connect.ClientOption) keysv1connect.KeyServiceClient {
	hc := e.srv.Client()
	return keysv1connect.NewKeyServiceClient(hc, e.url, append(opts, connect.WithInterceptors(bearer(secret)))...)
}

func bearer(secret string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if secret != "" {
				req.Header().Set("Authorization", "Bearer "+secret)
			}
			return next(ctx, req)
		}
	}
}

func code(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

func getOrCreate(t *testing.T, c keysv1connect.KeyServiceClient, users ...string) []*keysv1.UserKeys {
	t.Helper()
	r, err := c.GetOrCreateKeys(context.Background(), connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: users, Categories: []string{"contact", "location"}}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Results
}

func TestAuthnAuthz(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	ctx := context.Background()
	existing := "canary-user-existing-7d1f"
	res := getOrCreate(t, e.client(secretEnc), existing)
	subject := res[0].Subject
	if res[0].Status != keysv1.Status_STATUS_OK || len(res[0].Keys) != 2 || len(res[0].Keys[0].Key) != 32 {
		t.Fatalf("get-or-create: %v", res[0])
	}

	byUser := func(secret, sc string, cats []string, users ...string) error {
		_, err := e.client(secret).GetKeysByUser(ctx, connect.NewRequest(&keysv1.GetKeysByUserRequest{Scope: sc, UserIds: users, Categories: cats}))
		return err
	}
	bySubject := func(secret string, subjects ...string) error {
		_, err := e.client(secret).GetKeysBySubject(ctx, connect.NewRequest(&keysv1.GetKeysBySubjectRequest{Scope: scope, Subjects: subjects, Categories: []string{"contact"}}))
		return err
	}
	del := func(secret, user string) error {
		_, err := e.client(secret).DeleteUser(ctx, connect.NewRequest(&keysv1.DeleteUserRequest{Target: &keysv1.DeleteUserRequest_UserId{UserId: user}}))
		return err
	}
	rotate := func(secret, cat string) error {
		_, err := e.client(secret).RotateCategory(ctx, connect.NewRequest(&keysv1.RotateCategoryRequest{Category: cat}))
		return err
	}
	contact := []string{"contact"}
	cases := []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"no secret", func() error { return byUser("", scope, contact, existing) }, connect.CodeUnauthenticated},
		{"wrong secret", func() error { return byUser("not-a-configured-secret", scope, contact, existing) }, connect.CodeUnauthenticated},
		{"wrong secret admin op", func() error { return del("not-a-configured-secret", existing) }, connect.CodeUnauthenticated},
		{"encrypt-only by subject", func() error { return bySubject(secretEnc, subject) }, connect.CodePermissionDenied},
		{"unknown scope", func() error { return byUser(secretEnc, "other-scope", contact, existing) }, connect.CodePermissionDenied},
		{"category not granted", func() error { return byUser(secretEnc, scope, []string{"device"}, existing) }, connect.CodePermissionDenied},
		{"all categories not granted", func() error { return byUser(secretEnc, scope, nil, existing) }, connect.CodePermissionDenied},
		{"admin-only service gets keys", func() error { return byUser(secretAdmin, scope, contact, existing) }, connect.CodePermissionDenied},
		{"non-admin deletes", func() error { return del(secretDec, existing) }, connect.CodePermissionDenied},
		{"non-admin rotates", func() error { return rotate(secretEnc, "contact") }, connect.CodePermissionDenied},
		{"encrypt by user ok", func() error { return byUser(secretEnc, scope, contact, existing) }, 0},
		{"decrypt by subject ok", func() error { return bySubject(secretDec, subject) }, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := code(c.call()); got != c.want {
				t.Fatalf("code = %v, want %v", got, c.want)
			}
		})
	}

	// No leak of user existence: a refused call says the same for an
	// existing and a never-seen user.
	for _, f := range []func(string) error{
		func(u string) error { return byUser("not-a-configured-secret", scope, contact, u) },
		func(u string) error { return byUser(secretEnc, "other-scope", contact, u) },
		func(u string) error { return byUser(secretEnc, scope, []string{"device"}, u) },
		func(u string) error { return del(secretDec, u) },
	} {
		a, b := f(existing), f("canary-user-never-seen-93ab")
		if a == nil || b == nil || a.Error() != b.Error() {
			t.Fatalf("refusals differ for existing and unknown users: %v / %v", a, b)
		}
	}
	// Every denial is audited; no line names a user.
	audit := e.audit.String()
	if n := strings.Count(audit, `"outcome":"denied"`); n < 9 {
		t.Fatalf("%d denied audit lines, want >= 9:\n%s", n, audit)
	}
	if strings.Contains(audit, "canary") {
		t.Fatal("audit log contains a user id")
	}
}

func TestBadInputKeepsServing(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	ctx := context.Background()
	c := e.client(secretWide)
	long := "canary-" + strings.Repeat("x", 300)
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("canary-many-%d", i)
	}
	cases := []struct {
		name   string
		sc     string
		users  []string
		cats   []string
		substr string
	}{
		{"empty id", scope, []string{"canary-a", ""}, []string{"contact"}, "empty"},
		{"oversized id", scope, []string{long}, []string{"contact"}, "longer than"},
		{"unknown category", scope, []string{"canary-a"}, []string{"shoe-size"}, "unknown category"},
		{"batch over limit", scope, many, []string{"contact"}, "over the limit"},
		{"bad scope", "Bad Scope!", []string{"canary-a"}, []string{"contact"}, "scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.GetOrCreateKeys(ctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: tc.sc, UserIds: tc.users, Categories: tc.cats}))
			if code(err) != connect.CodeInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.substr) || strings.Contains(err.Error(), "canary") {
				t.Fatalf("message %q: want %q and no user id", err.Error(), tc.substr)
			}
		})
	}
	// A malformed body.
	req, _ := http.NewRequest(http.MethodPost, e.url+keysv1connect.KeyServiceGetOrCreateKeysProcedure, strings.NewReader("\xff\xff\xffnot protobuf"))
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Authorization", "Bearer "+secretWide)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_argument") {
		t.Fatalf("malformed body: %d %s", resp.StatusCode, body)
	}
	// Still serving.
	if res := getOrCreate(t, e.client(secretEnc), "canary-after"); res[0].Status != keysv1.Status_STATUS_OK {
		t.Fatal("server stopped serving after bad input")
	}
	if strings.Contains(e.log.String(), "canary") {
		t.Fatal("server log contains a user id")
	}
}

func TestShredThroughAPISurvivesRestart(t *testing.T) {
	dir, mk := t.TempDir(), masterKey(t)
	e := startEnv(t, dir, mk, nil)
	ctx := context.Background()
	admin, err := keyclient.NewAdmin(e.url, secretAdmin, e.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	user := "canary-shred-user-1"
	res := getOrCreate(t, e.client(secretEnc), user, "canary-shred-bystander")
	subject := res[0].Subject
	if err := admin.DeleteUser(ctx, user); err != nil {
		t.Fatal(err)
	}
	check := func(e *env) {
		t.Helper()
		r, err := e.client(secretDec).GetKeysByUser(ctx, connect.NewRequest(&keysv1.GetKeysByUserRequest{Scope: scope, UserIds: []string{user, "canary-shred-bystander"}, Categories: []string{"contact"}}))
		if err != nil {
			t.Fatal(err)
		}
		if r.Msg.Results[0].Status != keysv1.Status_STATUS_DELETED || len(r.Msg.Results[0].Keys) != 0 || r.Msg.Results[0].Subject != "" {
			t.Fatalf("by user after delete: %v", r.Msg.Results[0])
		}
		if r.Msg.Results[1].Status != keysv1.Status_STATUS_OK {
			t.Fatal("bystander affected by the delete")
		}
		s, err := e.client(secretDec).GetKeysBySubject(ctx, connect.NewRequest(&keysv1.GetKeysBySubjectRequest{Scope: scope, Subjects: []string{subject}, Categories: []string{"contact"}}))
		if err != nil {
			t.Fatal(err)
		}
		if s.Msg.Results[0].Status != keysv1.Status_STATUS_DELETED || len(s.Msg.Results[0].Keys) != 0 {
			t.Fatalf("by subject after delete: %v", s.Msg.Results[0])
		}
		// A late event must not re-create the user (DenyAfterDelete).
		g := getOrCreate(t, e.client(secretEnc), user)
		if g[0].Status != keysv1.Status_STATUS_DELETED {
			t.Fatalf("get-or-create after delete: %v", g[0])
		}
	}
	check(e)
	e.close()
	e2 := startEnv(t, dir, mk, nil)
	check(e2)
	// The audit line of the delete names the subject, not the user.
	if !strings.Contains(e.audit.String(), `"op":"DeleteUser"`) || !strings.Contains(e.audit.String(), subject) {
		t.Fatalf("audit: %s", e.audit.String())
	}
}

func TestAuditHasNoKeysOrUserIDs(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	ctx := context.Background()
	admin, _ := keyclient.NewAdmin(e.url, secretAdmin, e.srv.Client())
	users := []string{"canary-audit-0", "canary-audit-1", "canary-audit-2"}
	res := getOrCreate(t, e.client(secretEnc), users...)
	var keyBytes [][]byte
	for _, r := range res {
		for _, k := range r.Keys {
			keyBytes = append(keyBytes, k.Key)
		}
	}
	if _, err := admin.CreateKeychain(ctx, "canary-audit-created"); err != nil {
		t.Fatal(err)
	}
	if err := admin.Revoke(ctx, users[0], "location"); err != nil {
		t.Fatal(err)
	}
	if v, err := admin.Rotate(ctx, "contact", 0); err != nil || v != 2 {
		t.Fatalf("rotate: %d %v", v, err)
	}
	if err := admin.DeleteUser(ctx, users[1]); err != nil {
		t.Fatal(err)
	}
	if err := admin.DeleteSubject(ctx, res[2].Subject); err != nil {
		t.Fatal(err)
	}
	kc, err := admin.ShowSubject(ctx, res[0].Subject)
	if err != nil || kc.State != "active" {
		t.Fatalf("show: %+v %v", kc, err)
	}
	_ = getOrCreateErr(e.client("wrong-secret-wrong-secret"), users[0])

	lines := strings.Split(strings.TrimSpace(e.audit.String()), "\n")
	ops := map[string]int{}
	for _, l := range lines {
		var r AuditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line is not JSON: %q", l)
		}
		ops[r.Op+"/"+r.Outcome]++
		if r.Caller == "" && r.Outcome != "denied" {
			t.Fatalf("audit line without caller: %q", l)
		}
	}
	for _, want := range []string{"CreateKeychain/ok", "RevokeCategory/ok", "RotateCategory/ok", "DeleteUser/ok", "GetOrCreateKeys/denied"} {
		if ops[want] == 0 {
			t.Fatalf("no audit line %s in %v", want, ops)
		}
	}
	if ops["DeleteUser/ok"] != 2 {
		t.Fatalf("delete lines: %v", ops)
	}
	all := e.audit.String() + e.log.String()
	if strings.Contains(all, "canary") {
		t.Fatal("audit or log contains a user id")
	}
	for _, k := range keyBytes {
		for _, enc := range []string{string(k), hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k)} {
			if strings.Contains(all, enc) {
				t.Fatal("audit or log contains key bytes")
			}
		}
	}
}

func getOrCreateErr(c keysv1connect.KeyServiceClient, users ...string) error {
	_, err := c.GetOrCreateKeys(context.Background(), connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: users, Categories: []string{"contact"}}))
	return err
}

func TestMetricsAndHealth(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	getOrCreate(t, e.client(secretEnc), "canary-m1", "canary-m2")
	_ = getOrCreateErr(e.client("wrong-secret-wrong-secret"), "canary-m1")
	get := func(path string) (int, string) {
		resp, err := e.srv.Client().Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, body := get("/metrics")
	if st != 200 {
		t.Fatalf("/metrics: %d", st)
	}
	for _, want := range []string{
		`lockstream_keys_requests_total{code="ok",method="GetOrCreateKeys"} 1`,
		`lockstream_keys_requests_total{code="unauthenticated",method="GetOrCreateKeys"} 1`,
		`lockstream_keys_keys_served_total{method="GetOrCreateKeys"} 4`,
		`lockstream_keys_users_total{method="GetOrCreateKeys",status="ok"} 2`,
		`lockstream_keys_errors_total{kind="unauthenticated"} 1`,
		`lockstream_keys_request_duration_seconds_bucket{method="GetOrCreateKeys",le="+Inf"} 2`,
		`lockstream_keys_cache_requests_total{result="miss",tier="process"}`,
		`lockstream_keys_cache_requests_total{result="hit",tier="process"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "canary") {
		t.Fatal("metrics contain a user id")
	}
	if st, _ := get("/healthz"); st != 200 {
		t.Fatalf("/healthz: %d", st)
	}
	if st, _ := get("/readyz"); st != 200 {
		t.Fatalf("/readyz: %d", st)
	}
}

// slowStore delays every store call (until ctx is done) while slow is set.
type slowStore struct {
	keyservice.Store
	mu    sync.Mutex
	delay time.Duration
}

func (s *slowStore) set(d time.Duration) { s.mu.Lock(); s.delay = d; s.mu.Unlock() }
func (s *slowStore) wait(ctx context.Context) error {
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	if d == 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (s *slowStore) Get(ctx context.Context, keys []string) ([]keyservice.Item, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, keys)
}
func (s *slowStore) Put(ctx context.Context, key string, v []byte, rev uint64) (keyservice.Item, error) {
	if err := s.wait(ctx); err != nil {
		return keyservice.Item{}, err
	}
	return s.Store.Put(ctx, key, v, rev)
}

func TestDeadlineAndLoadShedding(t *testing.T) {
	var slow *slowStore
	e := startEnv(t, t.TempDir(), masterKey(t), func(s keyservice.Store) keyservice.Store { slow = &slowStore{Store: s}; return slow },
		func(c *Config, o *keyservice.Options) {
			c.RequestTimeout, c.MaxConcurrent = 100*time.Millisecond, 2
			o.CacheSize = -1
		})
	slow.set(time.Second)
	c := e.client(secretEnc)
	start := time.Now()
	err := getOrCreateErr(c, "canary-slow")
	if code(err) != connect.CodeDeadlineExceeded && code(err) != connect.CodeUnavailable {
		t.Fatalf("slow store: %v", err)
	}
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Fatalf("request took %v with a 100ms deadline", el)
	}
	// Shedding: with 2 slots busy, more requests are refused at once.
	var wg sync.WaitGroup
	codes := make(chan connect.Code, 8)
	for i := range 8 {
		wg.Go(func() { codes <- code(getOrCreateErr(c, fmt.Sprintf("canary-shed-%d", i))) })
	}
	wg.Wait()
	close(codes)
	shed := 0
	for c := range codes {
		if c == connect.CodeResourceExhausted {
			shed++
		}
	}
	if shed == 0 {
		t.Fatal("no request was shed with MaxConcurrent 2 and 8 slow requests")
	}
	// keyclient sees both as transient.
	if !keyclient.IsTransient(fmt.Errorf("x: %w", keyclient.Unavailable(errors.New("shed")))) {
		t.Fatal("IsTransient")
	}
	slow.set(0)
	if res := getOrCreate(t, c, "canary-after-slow"); res[0].Status != keysv1.Status_STATUS_OK {
		t.Fatal("not serving after the slow period")
	}
}

func TestGRPCAndKeyclientRemote(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	// gRPC protocol on the same port.
	g := e.client(secretEnc, connect.WithGRPC())
	res := getOrCreate(t, g, "canary-grpc")
	// gRPC-Web too.
	w := e.client(secretDec, connect.WithGRPCWeb())
	r, err := w.GetKeysBySubject(context.Background(), connect.NewRequest(&keysv1.GetKeysBySubjectRequest{Scope: scope, Subjects: []string{res[0].Subject}, Categories: []string{"contact"}}))
	if err != nil || !bytes.Equal(r.Msg.Results[0].Keys[0].Key, res[0].Keys[0].Key) {
		t.Fatalf("grpc-web by subject: %v", err)
	}
	// keyclient end to end: encrypt and decrypt services see the same key.
	enc, err := keyclient.NewRemote(e.url, keyclient.Options{Scope: scope, Secret: secretEnc, HTTPClient: e.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := keyclient.NewRemote(e.url, keyclient.Options{Scope: scope, Secret: secretDec, HTTPClient: e.srv.Client()})
	ek, err := enc.ForEncrypt(context.Background(), []string{"canary-kc"}, []string{"contact"})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := dec.ForDecrypt(context.Background(), []string{ek[0].Subject, "s_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, []string{"contact"})
	if err != nil {
		t.Fatal(err)
	}
	if !dk[0].Keys[0].Secret.Equal(ek[0].Keys[0].Secret) {
		t.Fatal("encrypt and decrypt keys differ")
	}
	if !errors.Is(dk[1].Err, keyclient.ErrUnknownSubject) {
		t.Fatalf("unknown subject: %v", dk[1].Err)
	}
	// An encrypt-only client asking by subject gets a permanent error.
	bad, _ := keyclient.NewRemote(e.url, keyclient.Options{Scope: scope, Secret: secretEnc, HTTPClient: e.srv.Client()})
	if _, err := bad.ForDecrypt(context.Background(), []string{ek[0].Subject}, []string{"contact"}); !errors.Is(err, keyclient.ErrPermissionDenied) || keyclient.IsTransient(err) {
		t.Fatalf("encrypt-only decrypt: %v", err)
	}
}

func TestServicesFile(t *testing.T) {
	s, err := LoadServices("testdata/services.json")
	if err != nil {
		t.Fatal(err)
	}
	if c := s.authenticate("example-ingest-secret-0001"); c == nil || c.name != "ingest" || c.mode != ModeEncrypt {
		t.Fatalf("ingest: %+v", c)
	}
	if c := s.authenticate("example-view-secret-0002"); c == nil || c.name != "analyst-view" {
		t.Fatal("analyst-view")
	}
	if s.authenticate("example-ingest-secret-000") != nil {
		t.Fatal("prefix of a secret authenticated")
	}
	for _, bad := range []string{
		`{"services":[]}`,
		`{"services":[{"name":"a","secret":"short","scopes":["x"],"categories":["*"],"mode":"encrypt"}]}`,
		`{"services":[{"name":"a","secret":"long-enough-secret-1","scopes":["x"],"categories":["*"],"mode":"write"}]}`,
		`{"services":[{"name":"a","secret":"long-enough-secret-1","scopes":["x"],"categories":["*"],"mode":"encrypt","admn":true}]}`,
		`{"services":[{"name":"a","secret_sha256":"abc","scopes":["x"],"categories":["*"],"mode":"encrypt"}]}`,
		`{"services":[{"name":"a","secret":"long-enough-secret-1","mode":"none"}]}`,
	} {
		if _, err := ParseServices([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		} else if strings.Contains(err.Error(), "long-enough-secret") {
			t.Errorf("error reveals the secret: %v", err)
		}
	}
}
