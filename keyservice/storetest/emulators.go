package storetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SkipEnv, set to 1, makes the emulator helpers skip the test instead of
// failing when a binary is missing. CI never sets it.
const SkipEnv = "LOCKSTREAM_SKIP_EMULATORS"

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s (%s=1)", msg, SkipEnv)
	}
	t.Fatalf("%s; set %s=1 to skip this test locally", msg, SkipEnv)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(t testing.TB, addr string, cmd *exec.Cmd, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // the Pub/Sub emulator is a JVM
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("%s exited before listening on %s", filepath.Base(cmd.Path), addr)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s within 90s", filepath.Base(cmd.Path), addr)
}

// start runs bin with args, stops it when the test ends, and waits until
// addr accepts connections.
func start(t testing.TB, addr, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	waitTCP(t, addr, cmd, done)
}

// CBTEmulatorPath finds the Bigtable emulator of the gcloud SDK:
// $SDK/platform/bigtable-emulator/cbtemulator.
func CBTEmulatorPath() (string, error) {
	return sdkPath(filepath.Join("platform", "bigtable-emulator", "cbtemulator"), "gcloud components install bigtable, or apt-get install google-cloud-cli-bigtable-emulator")
}

// PubSubEmulatorPath finds the Pub/Sub emulator of the gcloud SDK:
// $SDK/platform/pubsub-emulator/bin/cloud-pubsub-emulator (Java).
func PubSubEmulatorPath() (string, error) {
	return sdkPath(filepath.Join("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator"), "gcloud components install pubsub-emulator, or apt-get install google-cloud-cli-pubsub-emulator")
}

// sdkPath finds rel under the gcloud SDK root: $LOCKSTREAM_GCLOUD_SDK (set
// by .ci/run), $CLOUDSDK_ROOT, `gcloud info --format=value(installation.sdk_root)`
// or the usual install locations.
func sdkPath(rel, install string) (string, error) {
	var roots []string
	for _, env := range []string{"LOCKSTREAM_GCLOUD_SDK", "CLOUDSDK_ROOT"} {
		if r := os.Getenv(env); r != "" {
			roots = append(roots, r)
		}
	}
	if g, err := exec.LookPath("gcloud"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, g, "info", "--format=value(installation.sdk_root)").Output(); err == nil {
			if r := strings.TrimSpace(string(out)); r != "" {
				roots = append(roots, r)
			}
		}
	}
	roots = append(roots, "/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/google-cloud-sdk", "/opt/google-cloud-sdk")
	for _, r := range roots {
		p := filepath.Join(r, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found under %v (%s)", filepath.Base(rel), roots, install)
}

// PubSubEmulator makes PUBSUB_EMULATOR_HOST point at a running Pub/Sub
// emulator for the rest of the test and returns its address: the one
// already in PUBSUB_EMULATOR_HOST (.ci/run starts one), or one the helper
// starts on a free port (and stops at the end of the test).
func PubSubEmulator(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("PUBSUB_EMULATOR_HOST"); h != "" {
		return h
	}
	bin, err := PubSubEmulatorPath()
	if err != nil {
		skipOrFail(t, "Pub/Sub emulator: %v", err)
	}
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start(t, addr, bin, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	t.Setenv("PUBSUB_EMULATOR_HOST", addr)
	return addr
}

// BigtableEmulator makes BIGTABLE_EMULATOR_HOST point at a running Bigtable
// emulator for the rest of the test and returns its address: the one
// already in BIGTABLE_EMULATOR_HOST, or a cbtemulator the helper starts on
// a free port (and stops at the end of the test).
func BigtableEmulator(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("BIGTABLE_EMULATOR_HOST"); h != "" {
		return h
	}
	bin, err := CBTEmulatorPath()
	if err != nil {
		skipOrFail(t, "Bigtable emulator: %v", err)
	}
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start(t, addr, bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
	t.Setenv("BIGTABLE_EMULATOR_HOST", addr)
	return addr
}

// Memcached returns the address of a running memcached: $LOCKSTREAM_MEMCACHED
// if set, else a `memcached -l 127.0.0.1 -p <free port> -U 0` the helper
// starts (and stops at the end of the test).
func Memcached(t testing.TB) string {
	t.Helper()
	if a := os.Getenv("LOCKSTREAM_MEMCACHED"); a != "" {
		return a
	}
	bin, err := exec.LookPath("memcached")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/memcached"); serr == nil {
			bin = "/usr/bin/memcached"
		} else {
			skipOrFail(t, "memcached binary not found (apt-get install -y memcached)")
		}
	}
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	start(t, addr, bin, args...)
	return addr
}
