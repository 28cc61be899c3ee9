package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
	"github.com/lockstream/lockstream/keyservice/boltstore"
)

// The load benchmarks run our own bounded load generator against a real
// server on loopback (plain HTTP/1.1 + Connect protocol, binary protobuf;
// bolt store; warm caches; requests pre-encoded unless
// LOCKSTREAM_BENCH_CLIENT=connect, see benchGenerator). They print numbers; nothing here fails on time.
// By default the server is `lockstream keys serve` in its own process, as
// deployed (LOCKSTREAM_BENCH_SERVER=inprocess serves from this process: one
// heap, one GC). Either way they share the machine's cores with whatever
// else runs there: runtimeStats reports, for
// the measured interval, the scheduler latency, GC cycles and GC CPU share
// behind the latency figures, and the load average at the start.

const benchUsers = 10_000

var benchCats = []string{"location", "device"}

type benchEnv struct {
	url    string
	client keysv1connect.KeyServiceClient
	http   *http.Client
	gen    string // generator of the running sub-benchmark; "" = benchGenerator()
	raw    *rawGen
	users  []string
}

var (
	benchOnce sync.Once
	benchE    *benchEnv
	benchMax  atomic.Int64 // RPC/s measured by the max-load run (for the 50% run)
)

func getBenchEnv(b *testing.B) *benchEnv {
	benchOnce.Do(func() {
		dir, err := benchTempDir()
		if err != nil {
			b.Fatal(err)
		}
		var url string
		if benchServerMode() == "process" {
			u, stop, err := startServerProcess(dir) // lives until TestMain stops it
			if err != nil {
				b.Fatal(err)
			}
			url, stopBenchServer = u, func() { stop(); os.RemoveAll(dir) }
		} else {
			st, err := boltstore.Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			svc, err := keyservice.New(st, keyservice.Options{MasterKey: masterKey(b), Categories: testCats})
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(Config{Service: svc, Services: testServices(b), Audit: io.Discard,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConcurrent: 1024})
			if err != nil {
				b.Fatal(err)
			}
			url = httptest.NewServer(s.Handler()).URL // lives for the whole benchmark process
		}
		e := &benchEnv{url: url, http: keyclient.DefaultHTTPClient(), raw: newRawGen(url, 256)}
		e.client = keysv1connect.NewKeyServiceClient(e.http, url, connect.WithInterceptors(bearer(secretWide)))
		for i := range benchUsers {
			e.users = append(e.users, fmt.Sprintf("bench-user-%06d", i))
		}
		// Warm: create every keychain (and fill the service's cache).
		for i := 0; i < benchUsers; i += 1000 {
			if _, err := e.client.GetOrCreateKeys(context.Background(), connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: e.users[i : i+1000], Categories: benchCats})); err != nil {
				b.Fatal(err)
			}
		}
		benchE = e
	})
	if benchE == nil {
		b.Fatal("bench setup failed")
	}
	return benchE
}

func benchTempDir() (string, error) {
	return osMkdirTemp("", "lockstream-keys-bench-")
}

func (e *benchEnv) batch(i, n int) []string {
	start := (i * n) % (benchUsers - n)
	return e.users[start : start+n]
}

// call makes one batch lookup of users (e.batch) with the generator e.gen
// ("" is benchGenerator's).
func (e *benchEnv) call(ctx context.Context, users []string) error {
	gen := e.gen
	if gen == "" {
		gen = benchGenerator()
	}
	switch gen {
	case "raw":
		return e.raw.call(users)
	case "wire":
		return e.wireCall(ctx, users)
	}
	return e.connectCall(ctx, users)
}

// benchGenerator is how the load generator makes its calls
// (LOCKSTREAM_BENCH_CLIENT):
//   - "wire" (default): request bodies encoded once, sent through Go's
//     http.Client (a write and a read goroutine per connection), each
//     response read whole without decoding it (every 64th is decoded and
//     checked), as a load generator like wrk does;
//   - "raw": the same encoded requests written and read on the generator's
//     own HTTP/1.1 connections by the calling goroutine (loadgen_test.go):
//     ~75 µs of generator CPU per call at 50% load instead of ~130, so the
//     server gets more of the 2 cores and max load is higher (and 50% of
//     it too);
//   - "connect": the generated Connect client, which also marshals every
//     request and unmarshals every response.
func benchGenerator() string {
	switch g := os.Getenv("LOCKSTREAM_BENCH_CLIENT"); g {
	case "raw", "connect":
		return g
	}
	return "wire"
}

var (
	wireBodies sync.Map // first user index -> encoded request
	wireBufs   = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	wireCalls  atomic.Int64
)

// wireCall posts one GetOrCreateKeys request in the Connect protocol
// (binary protobuf over HTTP/1.1) and reads the whole response.
func (e *benchEnv) wireCall(ctx context.Context, users []string) error {
	body, ok := wireBodies.Load(users[0])
	if !ok {
		enc, err := proto.Marshal(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: users, Categories: benchCats})
		if err != nil {
			return err
		}
		body, _ = wireBodies.LoadOrStore(users[0], enc)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+keysv1connect.KeyServiceGetOrCreateKeysProcedure, bytes.NewReader(body.([]byte)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Authorization", "Bearer "+secretWide)
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf := wireBufs.Get().(*bytes.Buffer)
	defer wireBufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, buf.Bytes())
	}
	if wireCalls.Add(1)%64 == 0 {
		var m keysv1.GetOrCreateKeysResponse
		if err := proto.Unmarshal(buf.Bytes(), &m); err != nil {
			return err
		}
		if len(m.Results) != len(users) {
			return fmt.Errorf("%d results for %d users", len(m.Results), len(users))
		}
	}
	return nil
}

func (e *benchEnv) connectCall(ctx context.Context, users []string) error {
	resp, err := e.client.GetOrCreateKeys(ctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: users, Categories: benchCats}))
	if err != nil {
		return err
	}
	if len(resp.Msg.Results) != len(users) {
		return fmt.Errorf("%d results", len(resp.Msg.Results))
	}
	return nil
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
}

// closedLoop runs b.N calls from workers goroutines as fast as they go.
func closedLoop(b *testing.B, workers, batch int, e *benchEnv) (rate float64, lat []time.Duration) {
	r := runClosedLoop(b, workers, func(i int) error { return e.call(context.Background(), e.batch(i, batch)) })
	if r.failed > 0 {
		b.Fatalf("%d calls failed", r.failed)
	}
	return float64(b.N) / r.elapsed.Seconds(), r.lat
}

// loopRun is what runClosedLoop measured.
type loopRun struct {
	elapsed time.Duration   // from the first call to the last answer
	lat     []time.Duration // of call(i), at i
	failed  int64           // calls that returned an error
	err     error           // one of their errors
}

// runClosedLoop makes the b.N calls call(0) to call(b.N-1) from workers
// goroutines as fast as they go, between b.ResetTimer and b.StopTimer, and
// times each. A call that fails is counted and the loop goes on.
func runClosedLoop(b *testing.B, workers int, call func(i int) error) loopRun {
	r := loopRun{lat: make([]time.Duration, b.N)}
	var next, failed atomic.Int64
	var errOnce sync.Once
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t := time.Now()
				err := call(i)
				r.lat[i] = time.Since(t)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { r.err = err })
				}
			}
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	b.StopTimer()
	r.failed = failed.Load()
	return r
}

// openLoop issues b.N calls at a fixed rate (at most maxInFlight
// outstanding); latency counts from the scheduled send time, so a stalled
// server is not hidden (no coordinated omission).
func openLoop(b *testing.B, rate float64, batch, maxInFlight int, e *benchEnv) (achieved float64, lat, svc []time.Duration, dropped int64) {
	lat = make([]time.Duration, 0, b.N)
	svc = make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	var drop atomic.Int64
	interval := time.Duration(float64(time.Second) / rate)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			drop.Add(1) // the generator is bounded: count what it could not send
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			sent := time.Now()
			err := e.call(context.Background(), e.batch(i, batch))
			d, s := time.Since(due), time.Since(sent)
			if latLog != nil {
				latLogMu.Lock()
				fmt.Fprintf(latLog, "%d %d\n", due.UnixMicro(), d.Microseconds())
				latLogMu.Unlock()
			}
			if err == nil {
				mu.Lock()
				lat, svc = append(lat, d), append(svc, s)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	return float64(len(lat)) / el.Seconds(), lat, svc, drop.Load()
}

// LOCKSTREAM_BENCH_LATENCY_LOG=FILE writes a line per open-loop call: its
// due time (Unix µs) and its latency from then (µs), to line slow calls up
// with the server's GC cycles (GODEBUG=gctrace=1 is passed on to it) or
// anything else periodic.
var latLog = func() *os.File {
	p := os.Getenv("LOCKSTREAM_BENCH_LATENCY_LOG")
	if p == "" {
		return nil
	}
	f, err := os.Create(p)
	if err != nil {
		panic(err)
	}
	return f
}()
var latLogMu sync.Mutex

// runtimeStats reads what shares the CPU with the measured calls.
type runtimeStats struct {
	samples []rtmetrics.Sample
	runqNS  int64 // OS run-queue wait of this process's threads (Linux)
	cpu     time.Duration
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// osRunqWait sums, over this process's threads, the time they were
// runnable but waiting for a CPU in the kernel (/proc/self/task/*/schedstat,
// second field): CPU taken by other processes, or by more runnable threads
// than cores. Go's scheduler latency does not see it. 0 where unavailable.
func osRunqWait() int64 {
	files, _ := filepath.Glob("/proc/self/task/*/schedstat")
	var sum int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if fs := strings.Fields(string(b)); len(fs) >= 2 {
			n, _ := strconv.ParseInt(fs[1], 10, 64)
			sum += n
		}
	}
	return sum
}

var runtimeMetricNames = []string{
	"/sched/latencies:seconds",          // runnable -> running, every goroutine
	"/gc/pauses:seconds",                // stop-the-world pauses
	"/gc/cycles/total:gc-cycles",        // completed GC cycles
	"/cpu/classes/gc/total:cpu-seconds", // GC CPU (marking, assists, pauses)
	"/cpu/classes/total:cpu-seconds",    // all CPU available to the process
}

func readRuntimeStats() runtimeStats {
	st := runtimeStats{samples: make([]rtmetrics.Sample, len(runtimeMetricNames))}
	for i, n := range runtimeMetricNames {
		st.samples[i].Name = n
	}
	rtmetrics.Read(st.samples)
	st.runqNS = osRunqWait()
	st.cpu = processCPU()
	return st
}

// histP is the p-quantile (upper bucket bound, in ms) of the observations
// histogram after has over before.
func histP(before, after *rtmetrics.Float64Histogram, p float64) float64 {
	var total uint64
	for i := range after.Counts {
		total += after.Counts[i] - before.Counts[i]
	}
	if total == 0 {
		return 0
	}
	want, seen := uint64(float64(total)*p), uint64(0)
	for i := range after.Counts {
		seen += after.Counts[i] - before.Counts[i]
		if seen > want {
			return after.Buckets[i+1] * 1000
		}
	}
	return after.Buckets[len(after.Buckets)-1] * 1000
}

// report adds the runtime figures of the interval since before: scheduler
// latency p99 (how long a runnable goroutine — a request, the generator —
// waited for a CPU), STW GC pause p99, GC cycles per second and the GC's
// share of the process CPU. It logs what shares the CPU.
func (before runtimeStats) report(b *testing.B, elapsed time.Duration) {
	after := readRuntimeStats()
	bs, as := before.samples, after.samples
	b.ReportMetric(histP(bs[0].Value.Float64Histogram(), as[0].Value.Float64Histogram(), .99), "sched-p99-ms")
	b.ReportMetric(histP(bs[1].Value.Float64Histogram(), as[1].Value.Float64Histogram(), .99), "gc-pause-p99-ms")
	b.ReportMetric(float64(as[2].Value.Uint64()-bs[2].Value.Uint64())/elapsed.Seconds(), "gc/s")
	if cpu := as[4].Value.Float64() - bs[4].Value.Float64(); cpu > 0 {
		b.ReportMetric(100*(as[3].Value.Float64()-bs[3].Value.Float64())/cpu, "gc-cpu-%")
	}
	if before.runqNS > 0 {
		b.ReportMetric(float64(osRunqWait()-before.runqNS)/1e6/elapsed.Seconds(), "os-runq-wait-ms/s")
	}
	// The cores this process (generator, plus the server when in process)
	// kept busy.
	b.ReportMetric((processCPU()-before.cpu).Seconds()/elapsed.Seconds(), "cores")
	load, _ := os.ReadFile("/proc/loadavg")
	gen := benchGenerator()
	if benchE != nil && benchE.gen != "" {
		gen = benchE.gen
	}
	where := "load generator (" + gen + ") + server in one process (one GC)"
	if benchServerMode() == "process" {
		where = "load generator (" + gen + ") in this process, `lockstream keys serve` in its own (runtime figures are this process's)"
	}
	b.Logf("shares the CPU: %s, GOMAXPROCS=%d on %d CPUs, GOGC=%q GOMEMLIMIT=%q, server flags %q; 1/5/15-min load average before this run: %s",
		where, runtime.GOMAXPROCS(0), runtime.NumCPU(), os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT"), os.Getenv("LOCKSTREAM_BENCH_SERVER_FLAGS"), strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
}

// BenchmarkBatch100 measures batch-of-100 get-or-create lookups (2
// categories: 200 derived keys per RPC) at max load (closed loop, 16
// workers) and at 50% of that rate (open loop; LOCKSTREAM_BENCH_RPS sets
// the open-loop rate instead), with the wire generator (benchGenerator);
// then at the same 50% rate through the generated Connect client, whose
// own CPU shares the cores with the server.
func BenchmarkBatch100(b *testing.B) {
	const batch = 100
	keysPerRPC := float64(batch * len(benchCats))
	b.Run("load=100%", func(b *testing.B) {
		e := getBenchEnv(b)
		e.gen = ""
		hist, _ := serverHistogram(e.url)
		rs, t0 := readRuntimeStats(), time.Now()
		rate, lat := closedLoop(b, 16, batch, e)
		rs.report(b, time.Since(t0))
		reportServerShare(b, e.url, hist)
		benchMax.Store(int64(rate))
		b.ReportMetric(rate*keysPerRPC, "keys/s")
		b.ReportMetric(rate, "rpc/s")
		b.ReportMetric(percentile(lat, .50), "p50-ms")
		b.ReportMetric(percentile(lat, .99), "p99-ms")
	})
	half := func(gen string) func(b *testing.B) {
		return func(b *testing.B) {
			e := getBenchEnv(b)
			e.gen = gen
			defer func() { e.gen = "" }()
			target := float64(benchMax.Load()) / 2
			if target == 0 {
				target = 500
			}
			// LOCKSTREAM_BENCH_RPS fixes the rate instead (e.g. 1000 RPC/s =
			// 200k keys/s, the throughput target), to compare builds at one load.
			if v, err := strconv.ParseFloat(os.Getenv("LOCKSTREAM_BENCH_RPS"), 64); err == nil && v > 0 {
				target = v
			}
			b.Logf("open loop at %.0f RPC/s", target)
			hist, _ := serverHistogram(e.url)
			rs, t0 := readRuntimeStats(), time.Now()
			rate, lat, svc, dropped := openLoop(b, target, batch, 256, e)
			rs.report(b, time.Since(t0))
			reportServerShare(b, e.url, hist)
			b.ReportMetric(rate*keysPerRPC, "keys/s")
			b.ReportMetric(rate, "rpc/s")
			b.ReportMetric(percentile(lat, .50), "p50-ms")
			b.ReportMetric(percentile(lat, .99), "p99-ms")
			b.ReportMetric(float64(dropped), "dropped")
			// From the actual send, without the generator's own scheduling lag.
			b.ReportMetric(percentile(svc, .99), "p99-sent-ms")
			b.ReportMetric(percentile(lat, .90), "p90-ms")
		}
	}
	b.Run("load=50%", half(""))
	if benchGenerator() != "connect" {
		b.Run("load=50%,client=connect", half("connect"))
	}
}

// BenchmarkSingleKey measures the one-user, one-category path.
func BenchmarkSingleKey(b *testing.B) {
	e := getBenchEnv(b)
	rs := readRuntimeStats()
	r := runClosedLoop(b, 16, func(i int) error {
		_, err := e.client.GetOrCreateKeys(context.Background(), connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: e.users[i%benchUsers : i%benchUsers+1], Categories: benchCats[:1]}))
		return err
	})
	if r.failed > 0 {
		b.Errorf("%d calls failed, one: %v", r.failed, r.err)
	}
	rs.report(b, r.elapsed)
	b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "keys/s")
	b.ReportMetric(percentile(r.lat, .50), "p50-ms")
	b.ReportMetric(percentile(r.lat, .99), "p99-ms")
}

// BenchmarkKeyclientRPCsPer10k: 10k distinct users looked up one at a time
// from 64 goroutines through one keyclient.Client over the server. The
// cold pass is measured once; "steady" is the RPCs per 10k lookups once the
// cache is warm (target <= 5).
func BenchmarkKeyclientRPCsPer10k(b *testing.B) {
	e := getBenchEnv(b)
	c, err := keyclient.NewRemote(e.url, keyclient.Options{Scope: scope, Secret: secretWide})
	if err != nil {
		b.Fatal(err)
	}
	pass := func() {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 64 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= benchUsers {
						return
					}
					if _, err := c.ForEncrypt(context.Background(), e.users[i:i+1], benchCats); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	start := time.Now()
	pass()
	cold := c.Stats().RPCs
	coldTime := time.Since(start)
	b.ResetTimer()
	before := c.Stats().RPCs
	start = time.Now()
	for range b.N {
		pass()
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(cold), "cold-rpcs/10k")
	b.ReportMetric(float64(benchUsers)/coldTime.Seconds(), "cold-lookups/s")
	b.ReportMetric(float64(c.Stats().RPCs-before)/float64(b.N), "steady-rpcs/10k")
	b.ReportMetric(float64(b.N*benchUsers)/el.Seconds(), "steady-lookups/s")
}

var osMkdirTemp = os.MkdirTemp
