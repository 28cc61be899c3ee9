package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

const ingestTestSecret = "cli-ingest-test-secret-0001"

// serveKeysOn serves a key service (memory store) on addr until the test
// ends; the one service may get keys in scope "lockstream" only.
func serveKeysOn(t *testing.T, addr string) {
	t.Helper()
	svc, err := keyservice.New(memstore.New(), keyservice.Options{MasterKey: fieldcrypt.NewSecret(bytes.Repeat([]byte{5}, 32))})
	if err != nil {
		t.Fatal(err)
	}
	services, err := server.NewServices([]server.ServiceConfig{
		{Name: "ingest", SecretSHA256: server.HashSecret(ingestTestSecret), Scopes: []string{transforms.DefaultKeyScope}, Categories: []string{"*"}, Mode: server.ModeEncrypt},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Config{Service: svc, Services: services, Audit: io.Discard, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func replayFile(t *testing.T, events int) (string, []record.Message) {
	t.Helper()
	tr := synth.Generate(synth.Config{Events: events, Users: events / 2, Hours: 1, Seed: 25})
	var b bytes.Buffer
	for _, m := range tr.Messages {
		line, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, tr.Messages
}

// TestIngestConfigErrorsFailAtOnce: a keys address that does not parse, an
// unknown scheme, or a secret the key service refuses fails ingest before
// it reads input: exit code 2, the reason in one line, nothing written.
func TestIngestConfigErrorsFailAtOnce(t *testing.T) {
	in, _ := replayFile(t, 20)
	keysAddr := freeAddr(t)
	serveKeysOn(t, keysAddr)
	good := "http://" + keysAddr
	for _, tc := range []struct {
		name, keys, secret, scope, want string
	}{
		{"port typo", "http://127.0.0.1:1:2/", ingestTestSecret, "", `key service endpoint "http://127.0.0.1:1:2/" does not parse: invalid port ":1:2" after host`},
		{"port out of range", "http://127.0.0.1:74000", ingestTestSecret, "", `port "74000", want 1-65535`},
		{"unknown scheme", "htp://keys:7400", ingestTestSecret, "", `"htp://keys:7400": want local:DIR, http(s)://HOST:PORT`},
		{"bad second endpoint", good + ",https://keys-b:x", ingestTestSecret, "", `does not parse`},
		{"stray comma", good + ",", ingestTestSecret, "", `empty key service endpoint`},
		{"refused secret", good, "not-the-secret-00000000001", "", `refused this service's secret or rights`},
		{"scope not granted", good, ingestTestSecret, "other-scope", `may not use scope`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(transforms.KeysSecretEnv, tc.secret)
			out := filepath.Join(t.TempDir(), "root")
			args := []string{"ingest", "--input", in, "--root", out, "--keys", tc.keys, "--quiet"}
			if tc.scope != "" {
				args = append(args, "--key-scope", tc.scope)
			}
			start := time.Now()
			stdout, err := runCLI(t, context.Background(), "", args...)
			if err == nil {
				t.Fatalf("ingest succeeded:\n%s", stdout)
			}
			msg := err.Error()
			if code := exitCode(err); code != exitConfig {
				t.Errorf("exit code %d, want %d (%s)", code, exitConfig, msg)
			}
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "--keys: ") {
				t.Errorf("message %q: want one line starting --keys: and saying %q", msg, tc.want)
			}
			if strings.Contains(msg, tc.secret) && tc.secret != "" {
				t.Error("the message shows the secret")
			}
			if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("something was written under --out (%v)", serr)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("took %v: not at once", el)
			}
			t.Logf("exit %d: lockstream: %s", exitCode(err), msg)
		})
	}
}

// TestIngestReplayKeyServiceDown: a replay run whose key service does not
// answer fails with the cause after --key-retry-budget and dead-letters
// nothing; once the service is up, a re-run writes every event.
func TestIngestReplayKeyServiceDown(t *testing.T) {
	in, msgs := replayFile(t, 200)
	t.Setenv(transforms.KeysSecretEnv, ingestTestSecret)
	addr := freeAddr(t) // nothing listens there yet
	out := filepath.Join(t.TempDir(), "root")
	args := []string{"ingest", "--input", in, "--root", out, "--keys", "http://" + addr, "--key-retry-budget", "1s", "--quiet"}
	_, err := runCLI(t, context.Background(), "", args...)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("ingest with the key service down: %v (exit %d), want a failure naming the cause", err, exitCode(err))
	}
	if _, serr := os.Stat(filepath.Join(out, layout.DeadLetterArea)); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("dead letters written while the key service was down (%v)", serr)
	}
	serveKeysOn(t, addr)
	stdout, err := runCLI(t, context.Background(), "", args...)
	if err != nil {
		t.Fatalf("re-run: %v\n%s", err, stdout)
	}
	var total string
	for _, l := range strings.Split(stdout, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "TOTAL" {
			total = l
		}
	}
	if f := strings.Fields(total); len(f) < 3 || f[1] != strconv.Itoa(len(msgs)) {
		t.Fatalf("re-run accounting %q, want %d in:\n%s", total, len(msgs), stdout)
	}
	if _, serr := os.Stat(filepath.Join(out, layout.DeadLetterArea, record.ReasonKeyUnavailable)); !errors.Is(serr, os.ErrNotExist) {
		t.Fatal("key_unavailable dead letters")
	}
}
