package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/storetest"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key as PEM files in dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lockstream-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestKeysServeTLSAndMemcached: `keys serve --tls-cert --tls-key
// --memcached` serves HTTPS with the memcached tier on; a client trusting
// the certificate through $LOCKSTREAM_KEYS_CA_FILE gets keys, one that does
// not is refused, and /metrics shows the memcached tier's counters.
func TestKeysServeTLSAndMemcached(t *testing.T) {
	mc := storetest.Memcached(t)
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	mkFile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(mkFile, []byte(keyservice.GenerateMasterKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "tls-test-encrypt-secret-1"
	svcFile := filepath.Join(dir, "services.json")
	if err := os.WriteFile(svcFile, []byte(`{"services":[{"name":"ingest","secret":"`+secret+`","scopes":["events"],"categories":["*"],"mode":"encrypt"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	onKeysServing = func(a string) { addrc <- a }
	defer func() { onKeysServing = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, ctx, "", "keys", "serve", "--listen", "127.0.0.1:0", "--store", "bolt:"+filepath.Join(dir, "store"),
			"--master-key-file", mkFile, "--services", svcFile, "--audit-log", filepath.Join(dir, "audit.jsonl"),
			"--tls-cert", certFile, "--tls-key", keyFile, "--memcached", mc)
		done <- err
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("serve exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start")
	}
	url := "https://" + addr

	// Without the CA the client refuses the certificate.
	untrusted, err := keyclient.NewRemote(url, keyclient.Options{Scope: "events", Secret: secret, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusted.ForEncrypt(ctx, []string{"tls-user-1"}, []string{"contact"}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate accepted: %v", err)
	}
	t.Setenv(keyclient.CAFileEnv, certFile)
	for round := range 2 {
		kc, err := keyclient.NewRemote(url, keyclient.Options{Scope: "events", Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		res, err := kc.ForEncrypt(ctx, []string{"tls-user-1", "tls-user-2"}, []string{"contact"})
		if err != nil || res[0].Err != nil || res[1].Err != nil {
			t.Fatalf("round %d over TLS: %v %+v", round, err, res)
		}
	}
	resp, err := keyclient.DefaultHTTPClient().Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `lockstream_keys_cache_requests_total{result="miss",tier="memcached"}`) {
		t.Fatalf("/metrics (%d) lacks the memcached tier:\n%.2000s", resp.StatusCode, body)
	}
	t.Setenv(keyclient.CAFileEnv, filepath.Join(dir, "missing.pem"))
	bad, _ := keyclient.NewRemote(url, keyclient.Options{Scope: "events", Secret: secret, MaxAttempts: 1})
	if _, err := bad.ForEncrypt(ctx, []string{"tls-user-1"}, []string{"contact"}); err == nil || !strings.Contains(err.Error(), keyclient.CAFileEnv) {
		t.Fatalf("a missing CA file is not reported: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
