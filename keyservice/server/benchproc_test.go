package server

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain stops a benchmark's server process when the package's tests and
// benchmarks are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if stopBenchServer != nil {
		stopBenchServer()
	}
	os.Exit(code)
}

// stopBenchServer stops the `keys serve` process the load benchmarks
// started, if any.
var stopBenchServer func()

// benchServerMode says where the load benchmarks' server runs:
// LOCKSTREAM_BENCH_SERVER=process (default) starts `lockstream keys serve`
// as its own process, as deployed, so the generator's allocations and GC do
// not land on the server's latency; =inprocess serves from the benchmark
// process (one heap, one GC), which isolates the server code from process
// boundaries but measures the generator too.
func benchServerMode() string {
	if os.Getenv("LOCKSTREAM_BENCH_SERVER") == "inprocess" {
		return "inprocess"
	}
	return "process"
}

// startServerProcess builds the lockstream binary and runs `keys serve` on
// a loopback port over a bolt store in dir, with the test services. It
// returns the server's URL and a stop function.
func startServerProcess(dir string) (url string, stop func(), err error) {
	// LOCKSTREAM_BENCH_SERVER_BIN runs that lockstream binary instead of
	// building this tree's, to compare two builds of the server under the
	// same generator.
	bin := os.Getenv("LOCKSTREAM_BENCH_SERVER_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "lockstream")
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		build := exec.Command(gobin, "build", "-o", bin, "github.com/lockstream/lockstream/cmd/lockstream")
		if out, err := build.CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("building lockstream: %v\n%s", err, out)
		}
	}
	mk := make([]byte, 32)
	if _, err := rand.Read(mk); err != nil {
		return "", nil, err
	}
	mkFile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(mkFile, []byte(base64.StdEncoding.EncodeToString(mk)), 0o600); err != nil {
		return "", nil, err
	}
	svcs, err := json.Marshal(map[string]any{"services": []ServiceConfig{
		{Name: "wide", SecretSHA256: HashSecret(secretWide), Scopes: []string{"*"}, Categories: []string{"*"}, Mode: ModeDecrypt},
	}})
	if err != nil {
		return "", nil, err
	}
	svcFile := filepath.Join(dir, "services.json")
	if err := os.WriteFile(svcFile, svcs, 0o600); err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{bin, "keys", "serve", "--listen", addr, "--store", "bolt:" + filepath.Join(dir, "store"),
		"--master-key-file", mkFile, "--services", svcFile, "--max-concurrent", "1024", "--audit-log", os.DevNull}
	// LOCKSTREAM_BENCH_SERVER_CPUS=0 pins the server to those CPUs (taskset);
	// run the benchmark itself under `taskset -c 1` to give generator and
	// server a core each instead of both sharing both.
	// LOCKSTREAM_BENCH_SERVER_FLAGS adds flags of keys serve, e.g.
	// "--gc-percent=1000".
	args = append(args, strings.Fields(os.Getenv("LOCKSTREAM_BENCH_SERVER_FLAGS"))...)
	// LOCKSTREAM_BENCH_SERVER_PPROF=127.0.0.1:7401 serves the server's
	// profiler there (keys serve --debug-listen), to profile or trace it
	// during a run.
	if addr := os.Getenv("LOCKSTREAM_BENCH_SERVER_PPROF"); addr != "" {
		args = append(args, "--debug-listen", addr)
	}
	if cpus := os.Getenv("LOCKSTREAM_BENCH_SERVER_CPUS"); cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	// The server dies with the benchmark process (TestMain also stops it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	var tail strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if tail.Len() < 4096 {
				tail.WriteString(sc.Text() + "\n")
			}
		}
	}()
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return "http://" + addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			<-done
			return "", nil, fmt.Errorf("keys serve did not listen on %s:\n%s", addr, tail.String())
		}
	}
}

// serverHistogram reads the server's own latency histogram of
// GetOrCreateKeys from /metrics: cumulative counts by upper bound ("le"),
// with the server process's GC cycles and CPU seconds and the time read
// ("at").
func serverHistogram(url string) (map[string]float64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	const prefix = `lockstream_keys_request_duration_seconds_bucket{method="GetOrCreateKeys",le="`
	out["at"] = float64(time.Now().UnixNano()) / 1e9
	for _, line := range strings.Split(string(body), "\n") {
		// The server process's GC cycles and CPU (Go and process collectors).
		for _, name := range []string{"go_gc_duration_seconds_count", "process_cpu_seconds_total", "go_gc_scan_total_bytes"} {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				if n, err := strconv.ParseFloat(v, 64); err == nil {
					out[name] = n
				}
			}
		}
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(count, 64)
		if err != nil {
			return nil, err
		}
		out[le] = n
	}
	return out, nil
}

// reportServerShare reports the share of the interval's RPCs the server
// itself answered within 2 and 5 ms (its histogram, between before and
// after): with the end-to-end p99 it says whether a tail is the server's or
// the generator's and client's. It adds the server's GC cycles per second
// and, when it is its own process, the cores it kept busy.
func reportServerShare(b *testing.B, url string, before map[string]float64) {
	after, err := serverHistogram(url)
	if err != nil || before == nil {
		return
	}
	total := after["+Inf"] - before["+Inf"]
	if total > 0 {
		b.ReportMetric(100*(after["0.005"]-before["0.005"])/total, "server-le5ms-%")
		b.ReportMetric(100*(after["0.002"]-before["0.002"])/total, "server-le2ms-%")
	}
	if el := after["at"] - before["at"]; el > 0 {
		if n, ok := after["go_gc_duration_seconds_count"]; ok {
			b.ReportMetric((n-before["go_gc_duration_seconds_count"])/el, "server-gc/s")
		}
		// The memory the server's GC must scan (heap, stacks, globals), as
		// of its last cycle: what one cycle costs the tail.
		if n, ok := after["go_gc_scan_total_bytes"]; ok {
			b.ReportMetric(n/1e6, "server-gc-scan-MB")
		}
		if c, ok := after["process_cpu_seconds_total"]; ok && benchServerMode() == "process" {
			b.ReportMetric((c-before["process_cpu_seconds_total"])/el, "server-cores")
		}
	}
}
