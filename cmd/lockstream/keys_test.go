package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/server"
)

// runCLI runs the lockstream command in process.
func runCLI(t *testing.T, ctx context.Context, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

const canaryUser = "canary.cli.user@example.com"

func TestKeysCLILocal(t *testing.T) {
	t.Setenv("LOCKSTREAM_MASTER_KEY", "")
	t.Setenv(envKeysURL, "")
	dir := t.TempDir()
	keys := "local:" + dir
	ctx := context.Background()

	if _, err := runCLI(t, ctx, "", "keys", "create-user", canaryUser, "--keys", keys); err == nil || !strings.Contains(err.Error(), "keys init") {
		t.Fatalf("without a master key: %v (want a hint to run keys init)", err)
	}
	if _, err := runCLI(t, ctx, "", "keys", "init", "--store", "bolt:"+dir, "--keys", keys); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("init with --store and --keys: %v, want an error", err)
	}
	out, err := runCLI(t, ctx, "", "keys", "init", "--store", "bolt:"+dir)
	if err != nil || !strings.Contains(out, "wrote a new master key") {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "master.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master.key: %v %v", fi, err)
	}
	// The deprecated spelling names the same directory.
	if out, _ := runCLI(t, ctx, "", "keys", "init", "--keys", keys); !strings.Contains(out, "already exists") {
		t.Fatalf("second init (--keys local:DIR): %s", out)
	}
	out, err = runCLI(t, ctx, "", "keys", "create-user", canaryUser, "--keys", keys)
	if err != nil || !strings.Contains(out, "keychain s_") {
		t.Fatalf("create-user: %v\n%s", err, out)
	}
	subject := strings.Fields(out)[1]
	all := out
	steps := [][]string{
		{"keys", "rotate", "contact", "--keys", keys},
		{"keys", "revoke", "-", "location", "--keys", keys}, // user id from stdin
		{"keys", "show", canaryUser, "--keys", keys},
	}
	for _, s := range steps {
		out, err := runCLI(t, ctx, canaryUser+"\n", s...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", s, err, out)
		}
		all += out
	}
	if !strings.Contains(all, "version 2 is now current") || !strings.Contains(all, subject) || !regexpLine(all, "location", "revoked") {
		t.Fatalf("output:\n%s", all)
	}
	out, err = runCLI(t, ctx, "", "keys", "delete-user", "--subject", subject, "--keys", keys)
	if err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	all += out
	out, err = runCLI(t, ctx, "", "keys", "show", "--subject", subject, "--keys", keys)
	if err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("show after delete: %v\n%s", err, out)
	}
	all += out
	if _, err := runCLI(t, ctx, "", "keys", "show", "canary-nobody", "--keys", keys); err == nil || !strings.Contains(err.Error(), "no such keychain") || strings.Contains(err.Error(), "canary") {
		t.Fatalf("unknown user: %v", err)
	}
	for _, args := range [][]string{
		{"keys", "show", "canary-both", "--subject", subject, "--keys", keys},
		{"keys", "delete-user", "--keys", keys},
	} {
		if _, err := runCLI(t, ctx, "", args...); err == nil || !strings.Contains(err.Error(), "not both") {
			t.Errorf("%v: %v, want: give a USER_ID or --subject, not both", args, err)
		}
	}
	if strings.Contains(all, "canary") {
		t.Fatalf("CLI output names the user:\n%s", all)
	}
}

func regexpLine(s, a, b string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, a) && strings.Contains(l, b) {
			return true
		}
	}
	return false
}

func TestKeysCLIServed(t *testing.T) {
	dir := t.TempDir()
	mkFile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(mkFile, []byte(keyservice.GenerateMasterKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	const adminSecret, encSecret = "cli-test-admin-secret-1", "cli-test-encrypt-secret-2"
	svcFile := filepath.Join(dir, "services.json")
	if err := os.WriteFile(svcFile, []byte(`{"services":[
		{"name":"ops","secret_sha256":"`+server.HashSecret(adminSecret)+`","categories":["*"],"mode":"none","admin":true},
		{"name":"ingest","secret":"`+encSecret+`","scopes":["events"],"categories":["*"],"mode":"encrypt"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(dir, "audit.jsonl")
	addrc := make(chan string, 1)
	onKeysServing = func(a string) { addrc <- a }
	defer func() { onKeysServing = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debugAddr := dl.Addr().String()
	dl.Close()
	go func() {
		_, err := runCLI(t, ctx, "", "keys", "serve", "--listen", "127.0.0.1:0", "--store", "bolt:"+filepath.Join(dir, "store"),
			"--master-key-file", mkFile, "--services", svcFile, "--audit-log", auditFile, "--request-timeout", "1s",
			"--debug-listen", debugAddr)
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
	url := "http://" + addr
	// The profiler is on --debug-listen only, never on the API port.
	if resp, err := http.Get("http://" + debugAddr + "/debug/pprof/cmdline"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("profiler on --debug-listen: %v %v", err, resp)
	}
	if resp, err := http.Get(url + "/debug/pprof/cmdline"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("profiler on the API port: %v %v", err, resp)
	}

	kc, err := keyclient.NewRemote(url, keyclient.Options{Scope: "events", Secret: encSecret})
	if err != nil {
		t.Fatal(err)
	}
	res, err := kc.ForEncrypt(ctx, []string{canaryUser}, []string{"contact"})
	if err != nil || res[0].Err != nil {
		t.Fatalf("encrypt: %v %+v", err, res)
	}
	t.Setenv(envKeysSecret, adminSecret)
	out, err := runCLI(t, ctx, "", "keys", "show", canaryUser, "--keys", url)
	if err != nil || !strings.Contains(out, res[0].Subject) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if _, err := runCLI(t, ctx, "", "keys", "rotate", "contact", "--keys", url, "--secret", encSecret); err == nil || !strings.Contains(err.Error(), "may not") {
		t.Fatalf("rotate as non-admin: %v", err)
	}
	if out, err := runCLI(t, ctx, "", "keys", "delete-user", canaryUser, "--keys", url); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	kc2, _ := keyclient.NewRemote(url, keyclient.Options{Scope: "events", Secret: encSecret})
	res, err = kc2.ForEncrypt(ctx, []string{canaryUser}, []string{"contact"})
	if err != nil || !errors.Is(res[0].Err, keyclient.ErrUserDeleted) {
		t.Fatalf("after delete: %v %+v", err, res)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	audit, err := os.ReadFile(auditFile)
	if err != nil || !strings.Contains(string(audit), `"op":"DeleteUser"`) || !strings.Contains(string(audit), `"outcome":"denied"`) {
		t.Fatalf("audit: %v\n%s", err, audit)
	}
	if strings.Contains(string(audit), "canary") {
		t.Fatal("audit names the user")
	}
}

// TestKeysExportBQIsBQExportKeys: `keys export-bq` is `bq export-keys` under
// another name: the same flags and the same behaviour.
func TestKeysExportBQIsBQExportKeys(t *testing.T) {
	flags := func(args ...string) string {
		t.Helper()
		root := newRootCmd()
		c, _, err := root.Find(args)
		if err != nil || c.Name() != args[len(args)-1] {
			t.Fatalf("%v: %v", args, err)
		}
		var names []string
		c.Flags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name+"="+f.DefValue) })
		return strings.Join(names, " ")
	}
	if a, b := flags("keys", "export-bq"), flags("bq", "export-keys"); a != b || a == "" {
		t.Fatalf("flags differ:\n%s\n%s", a, b)
	}
	ctx := context.Background()
	_, errA := runCLI(t, ctx, "", "keys", "export-bq", "--project", "p")
	_, errB := runCLI(t, ctx, "", "bq", "export-keys", "--project", "p")
	if errA == nil || errB == nil || errA.Error() != errB.Error() {
		t.Fatalf("errors differ: %v / %v", errA, errB)
	}
}

func TestKeysServeGCPercent(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--gc-percent", "5"}, "--gc-percent 5: want off or at least 10"},
		{[]string{"--gc-percent", "off"}, "--gc-percent off needs --memory-limit"},
		{[]string{"--gc-percent", "off", "--memory-limit", "12"}, "--memory-limit 12: want a size of at least 64MiB"},
		{[]string{"--memory-limit", "1GB"}, "--memory-limit 1GB: want a size"},
	} {
		args := append([]string{"keys", "serve", "--store", "memory:", "--services", "x.json"}, c.args...)
		_, err := runCLI(t, ctx, "", args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
	for s, want := range map[string]int64{"1GiB": 1 << 30, "512MiB": 512 << 20, "4096": 4096, "2TiB": 2 << 40, "64KiB": 64 << 10} {
		if n, err := parseByteSize(s); err != nil || n != want {
			t.Fatalf("parseByteSize(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
}
