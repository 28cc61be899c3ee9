package pipelines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/google/pprof/profile"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyclient/keyclienttest"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// The pass-through baselines have the shape of ingest + hourly — the same
// replay source, a file per batch written from the stage that read it (as
// ingest writes its raw files; neither reshuffles batches), one file per
// shard written by one bundle that reads every batch's file once and
// routes each line to its shard (a hash of the message id), as hourly's
// publication reads every part file once, the last stage ended like
// hourly's (transforms.EndBranch) —
// without validation, encryption, keys or dedupe. "baseline" writes the
// lines as plain text; "baseline-ocf" writes them as records of Avro
// container files with transforms.FileCodec, the format and codec ingest
// and hourly write, so the ratio against it is what validation and
// encryption cost.

func init() {
	register.DoFn3x1[context.Context, transforms.Batch, func(string), error](&passWriteFn{})
	register.DoFn4x1[context.Context, []byte, func(*string) bool, func(string), error](&passShardsFn{})
}

// phase is what one pipeline run cost: wall, CPU (user+system) and system
// time, minor page faults and peak RSS of the process that ran it.
type phase struct {
	wall, cpu, sys time.Duration
	faults         int64
	rss            int64 // bytes
	alloc          int64 // bytes allocated by the process (runtime.MemStats.TotalAlloc)
	// keysCPU is the CPU time the in-process fake key service took in
	// ingest or view (from the child's CPU profile: samples with
	// keyclient.(*Fake) on the stack).
	keysCPU time.Duration
	records int64 // view: records decrypted
	// decryptCPU is view's CPU time in decryption (from its CPU profile:
	// samples with the key client or record.(*Decryptor).openBytes on the
	// stack): its key lookups and the opening of fields, not the reading
	// and writing around them.
	decryptCPU time.Duration
}

// user is the phase's user CPU time.
func (p phase) user() time.Duration { return p.cpu - p.sys }

func (p phase) String() string {
	return fmt.Sprintf("%.2f s (cpu %.1f s, sys %.1f s, %dk faults, peak RSS %d MB)", p.wall.Seconds(), p.cpu.Seconds(), p.sys.Seconds(), p.faults/1000, p.rss>>20)
}

type benchRound struct {
	pass, passOCF, ingest, hourly phase
	// ingest and hourly without encryption (keyclienttest.Revoked)
	plainIngest, plainHourly phase
	warm                     phase // ingest with warm caches (LOCKSTREAM_BENCH_WARM)
	view                     phase // view of every published hour (every round)
	plainView                phase // the same over the hours published without encryption
}

// cryptoCPU is what keys and encryption cost ingest: its CPU time minus
// that of ingest without encryption, in µs per message.
func (r benchRound) cryptoCPU(msgs float64) float64 {
	return float64((r.ingest.cpu - r.plainIngest.cpu).Nanoseconds()) / msgs / 1e3
}

// noCryptoWallRatio and noCryptoCPURatio compare ingest + hourly with and
// without encryption.
func (r benchRound) noCryptoWallRatio() float64 {
	return (r.ingest.wall + r.hourly.wall).Seconds() / (r.plainIngest.wall + r.plainHourly.wall).Seconds()
}

func (r benchRound) noCryptoCPURatio() float64 {
	return (r.ingest.cpu + r.hourly.cpu).Seconds() / (r.plainIngest.cpu + r.plainHourly.cpu).Seconds()
}

// cpuRatio is ingest + hourly's CPU time over the baseline's.
func (r benchRound) cpuRatio() float64 {
	return (r.ingest.cpu + r.hourly.cpu).Seconds() / r.pass.cpu.Seconds()
}

// viewCPU is view's CPU time per record decrypted, in µs.
func (r benchRound) viewCPU() float64 {
	return r.perRecord(r.view.cpu)
}

// viewDecryptCPU is the part of it in decryption (phase.decryptCPU).
func (r benchRound) viewDecryptCPU() float64 {
	return r.perRecord(r.view.decryptCPU)
}

// viewCryptoCPU is what keys and decryption cost view, measured as
// cryptoCPU is for ingest: view's CPU time minus that of view over the
// hours published without encryption (every PII field null, each subject
// answered as revoked), in µs per record.
func (r benchRound) viewCryptoCPU() float64 {
	return r.perRecord(r.view.cpu - r.plainView.cpu)
}

// plainViewCPU is view's CPU time per record over the hours published
// without encryption.
func (r benchRound) plainViewCPU() float64 {
	return r.perRecord(r.plainView.cpu)
}

func (r benchRound) perRecord(d time.Duration) float64 {
	if r.view.records == 0 {
		return 0
	}
	return float64(d.Nanoseconds()) / float64(r.view.records) / 1e3
}

// ratio is the round's lockstream time over its baseline's.
func (r benchRound) ratio() float64 {
	return (r.ingest.wall + r.hourly.wall).Seconds() / r.pass.wall.Seconds()
}

// noCryptoRatio is ratio without encryption: ingest-no-crypto and its
// hourly over the same baseline.
func (r benchRound) noCryptoRatio() float64 {
	return (r.plainIngest.wall + r.plainHourly.wall).Seconds() / r.pass.wall.Seconds()
}

// warmRatio is ratio with the warm ingest in place of the cold one.
func (r benchRound) warmRatio() float64 {
	return (r.warm.wall + r.hourly.wall).Seconds() / r.pass.wall.Seconds()
}

// userRatio is the same for user CPU time: system time, which on these VMs
// is mostly page faults (~10-18 µs each), left out. It is what the ratio
// tends to on a machine where faults are cheap.
func (r benchRound) userRatio() float64 {
	return (r.ingest.user() + r.hourly.user()).Seconds() / r.pass.user().Seconds()
}

// Each pipeline of the benchmark runs in a process of its own: this test
// binary, started again with benchChildEnv naming the pipeline (TestMain
// runs it instead of the tests). That is how a scheduler runs ingest and
// hourly, and it keeps the pipelines out of each other's way: in one
// process, whichever ran first paid for growing the heap (on the 2-core VMs
// here a minor page fault costs ~10-18 µs, a GB of fresh memory ~3 s of
// system time) and whichever ran next inherited the last one's garbage and
// freed-but-not-returned memory; ratios swung 0.9-2.5 with the order and the
// runtime's scavenger rather than with the work. A process of its own also
// gives each pipeline its own peak RSS.
const (
	benchChildEnv   = "LOCKSTREAM_BENCH_CHILD"   // baseline, baseline-ocf, ingest, hourly, ingest-no-crypto, hourly-no-crypto, view, view-no-crypto or ingest-warm
	benchInEnv      = "LOCKSTREAM_BENCH_IN"      // the replay file
	benchRootEnv    = "LOCKSTREAM_BENCH_ROOT"    // the pipeline's output root
	benchCountEnv   = "LOCKSTREAM_BENCH_COUNT"   // messages in the replay file (ingest checks its accounting)
	benchProfileEnv = "LOCKSTREAM_BENCH_PROFILE" // a directory: each child writes <pipeline>-<round>.pprof (CPU) and .allocs there
	benchRoundEnv   = "LOCKSTREAM_BENCH_ROUND"
	benchRSSEnv     = "LOCKSTREAM_BENCH_RSS_FILE" // the child writes its peak RSS (VmHWM, kB), bytes allocated, the fake key service's CPU (ns) and view's records there
	benchWarmEnv    = "LOCKSTREAM_BENCH_WARM"     // non-empty: each round also measures ingest with warm caches
	// A duration: the fake key service answers each call that much later,
	// as a key server across a network would (its CPU is still the fake's).
	benchKeyLatencyEnv = "LOCKSTREAM_BENCH_KEY_LATENCY"
)

// measure runs one pipeline in a child process; its failure ends the
// benchmark.
func measure(b *testing.B, pipeline, round, in, root string, count int) phase {
	cmd := exec.Command(os.Args[0])
	rssFile := root + ".rss"
	cmd.Env = append(os.Environ(), benchChildEnv+"="+pipeline, benchInEnv+"="+in, benchRootEnv+"="+root,
		benchCountEnv+"="+strconv.Itoa(count), benchRoundEnv+"="+round, benchRSSEnv+"="+rssFile)
	// prism logs every job's start and end; shown only when the child fails.
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if dir := os.Getenv(benchProfileEnv); dir != "" {
		// The child's output (prism's lines, GODEBUG=gctrace=1's) beside its profiles.
		if werr := os.WriteFile(filepath.Join(dir, pipeline+"-"+round+".log"), out.Bytes(), 0o644); werr != nil {
			b.Logf("%s: its output: %v", pipeline, werr)
		}
	}
	if err != nil {
		log := out.Bytes()
		if len(log) > 8<<10 {
			log = log[len(log)-8<<10:]
		}
		b.Fatalf("%s (round %s): %v; the end of its output:\n%s", pipeline, round, err, log)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Fatalf("%s: no resource usage for the child process", pipeline)
	}
	// Not the rusage's Maxrss: Linux carries the parent's RSS into it when
	// the child is started (exec from a process sharing the parent's
	// memory), so it would read the benchmark's own size.
	data, err := os.ReadFile(rssFile)
	if err != nil {
		b.Fatalf("%s: its peak RSS: %v", pipeline, err)
	}
	var kb, alloc, keysCPU, records, decryptCPU int64
	if _, err := fmt.Sscan(string(data), &kb, &alloc, &keysCPU, &records, &decryptCPU); err != nil {
		b.Fatalf("%s: its peak RSS %q: %v", pipeline, data, err)
	}
	return phase{
		wall:       wall,
		cpu:        time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		sys:        time.Duration(ru.Stime.Nano()),
		faults:     ru.Minflt,
		rss:        kb << 10,
		alloc:      alloc,
		keysCPU:    time.Duration(keysCPU),
		records:    records,
		decryptCPU: time.Duration(decryptCPU),
	}
}

// peakRSS reads this process's VmHWM in kB.
func peakRSS() (string, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "", err
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.TrimSuffix(strings.TrimSpace(v), " kB"), nil
		}
	}
	return "", errors.New("no VmHWM in /proc/self/status")
}

// runBenchChild runs the pipeline benchChildEnv names (a child of measure)
// and returns the process's exit code.
func runBenchChild() int {
	pipeline, round := os.Getenv(benchChildEnv), os.Getenv(benchRoundEnv)
	in, root := os.Getenv(benchInEnv), os.Getenv(benchRootEnv)
	count, _ := strconv.Atoi(os.Getenv(benchCountEnv))
	profile := "" // the profiles' path without their extension
	// Ingest and view are always profiled (in memory) for the share of
	// their CPU that the fake key service and decryption take; with
	// LOCKSTREAM_BENCH_PROFILE every pipeline's profile also goes to a file.
	var cpuProf *bytes.Buffer
	var records int64
	var sinks []io.Writer
	if pipeline == "ingest" || pipeline == "view" || pipeline == "view-no-crypto" {
		cpuProf = &bytes.Buffer{}
		sinks = append(sinks, cpuProf)
	}
	var profFile *os.File
	if dir := os.Getenv(benchProfileEnv); dir != "" {
		profile = filepath.Join(dir, pipeline+"-"+round)
		f, err := os.Create(profile + ".pprof")
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: CPU profile: %v\n", pipeline, err)
			return 1
		}
		profFile = f
		sinks = append(sinks, f)
	}
	profiling := false
	startProfile := func() error {
		if len(sinks) == 0 {
			return nil
		}
		if err := pprof.StartCPUProfile(io.MultiWriter(sinks...)); err != nil {
			return fmt.Errorf("CPU profile: %w", err)
		}
		profiling = true
		return nil
	}
	ctx := context.Background()
	var err error
	// view profiles only what it measures (its setup is ingest and hourly,
	// profiled on their own); every other pipeline from its start.
	if pipeline != "view" && pipeline != "view-no-crypto" {
		err = startProfile()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", pipeline, err)
		return 1
	}
	switch pipeline {
	case "baseline":
		err = runBaseline(ctx, in, root, "pass"+round, false)
	case "baseline-ocf":
		err = runBaseline(ctx, in, root, "passocf"+round, true)
	case "ingest":
		var kc *keyclient.Client
		if kc, err = benchKeys(); err == nil {
			err = benchIngest(ctx, kc, in, root, count)
		}
	case "ingest-no-crypto":
		err = benchIngest(ctx, keyclienttest.Revoked{}, in, root, count)
	case "ingest-warm":
		err = benchIngestWarm(ctx, in, root, count)
	case "hourly", "hourly-no-crypto":
		err = benchHourly(ctx, root)
	case "view":
		records, err = benchView(ctx, in, root, count, true, startProfile)
	case "view-no-crypto":
		records, err = benchView(ctx, in, root, count, false, startProfile)
	default:
		err = fmt.Errorf("unknown pipeline %q", pipeline)
	}
	if profiling {
		pprof.StopCPUProfile()
	}
	if profFile != nil {
		if cerr := profFile.Close(); err == nil {
			err = cerr
		}
	}
	if profile != "" && err == nil {
		err = writeAllocs(profile + ".allocs")
	}
	var keysCPU, decryptCPU time.Duration
	switch {
	case err != nil:
	case pipeline == "ingest":
		keysCPU, err = cpuUnder(cpuProf.Bytes(), "keyclient.(*Fake)")
	case pipeline == "view" || pipeline == "view-no-crypto":
		decryptCPU, err = cpuUnder(cpuProf.Bytes(), "keyclient.", "record.(*Decryptor).openBytes")
		if err == nil {
			keysCPU, err = cpuUnder(cpuProf.Bytes(), "keyclient.(*Fake)")
		}
	}
	if err == nil {
		var kb string
		if kb, err = peakRSS(); err == nil {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			err = os.WriteFile(os.Getenv(benchRSSEnv), fmt.Appendf(nil, "%s %d %d %d %d", kb, ms.TotalAlloc, keysCPU, records, decryptCPU), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", pipeline, err)
		return 1
	}
	return 0
}

// writeAllocs writes the process's allocation profile to path (read it
// with go tool pprof -sample_index=alloc_space).
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchKeys is the fake key service behind the real client (batching,
// cache), as pipelines use a key service in production.
func benchKeys() (*keyclient.Client, error) {
	f := keyclient.NewFake()
	if d, err := time.ParseDuration(os.Getenv(benchKeyLatencyEnv)); err == nil {
		f.SetLatency(d)
	}
	o, err := transforms.KeyOptions(transforms.DefaultKeyScope)
	if err != nil {
		return nil, err
	}
	return keyclient.New(f, o)
}

// benchIngest runs ingest over in with the keys of kc.
func benchIngest(ctx context.Context, kc keyclient.Keys, in, root string, count int) error {
	ing, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: root, KeysURL: registerKeys(kc)})
	if err != nil {
		return err
	}
	if tot := ing.Totals(); tot.In != int64(count) {
		// Ingest's table comes from runner metrics; say so when they drift.
		return fmt.Errorf("ingest accounting saw %d of %d messages", tot.In, count)
	}
	return nil
}

// benchIngestWarm runs ingest over in twice in this process with one key
// client, and writes what the second run cost to root+".warm" (wall, user
// and system nanoseconds, minor faults): a long-running streaming ingest's
// steady state, where every user's keys and ciphers are cached and the heap
// has grown. The first run writes into root+"-first" and is not measured.
func benchIngestWarm(ctx context.Context, in, root string, count int) error {
	kc, err := benchKeys()
	if err != nil {
		return err
	}
	if err := benchIngest(ctx, kc, in, root+"-first", count); err != nil {
		return err
	}
	return measurePart(root+".warm", func() error { return benchIngest(ctx, kc, in, root, count) })
}

// measurePart runs fn, after a sync as before every measured pipeline, and
// writes what it cost this process to path (wall, user and system
// nanoseconds, minor faults): the measured part of a child that first
// sets up what it needs. readPart reads it back.
func measurePart(path string, fn func() error) error {
	syscall.Sync()
	var before, after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		return err
	}
	t0 := time.Now()
	if err := fn(); err != nil {
		return err
	}
	wall := time.Since(t0)
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		return err
	}
	cost := fmt.Sprintf("%d %d %d %d", wall, after.Utime.Nano()-before.Utime.Nano(),
		after.Stime.Nano()-before.Stime.Nano(), after.Minflt-before.Minflt)
	return os.WriteFile(path, []byte(cost), 0o644)
}

// readPart returns the cost measurePart wrote to path for the child p,
// with p's peak RSS and what its profile counted.
func readPart(b *testing.B, pipeline, path string, p phase) phase {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatalf("%s: %v", pipeline, err)
	}
	var wall, user, sys, faults int64
	if _, err := fmt.Sscan(string(data), &wall, &user, &sys, &faults); err != nil {
		b.Fatalf("%s: its cost %q: %v", pipeline, data, err)
	}
	return phase{wall: time.Duration(wall), cpu: time.Duration(user + sys), sys: time.Duration(sys), faults: faults,
		rss: p.rss, records: p.records, decryptCPU: p.decryptCPU, keysCPU: p.keysCPU}
}

// measureWarm runs ingest-warm in a child process and returns the cost of
// its measured (second) run, with the process's peak RSS.
func measureWarm(b *testing.B, round, in, root string, count int) phase {
	return readPart(b, "ingest-warm", root+".warm", measure(b, "ingest-warm", round, in, root, count))
}

// cpuUnder is the CPU time of the samples of a CPU profile with a function
// whose name contains one of names on their stack.
func cpuUnder(prof []byte, names ...string) (time.Duration, error) {
	p, err := profile.Parse(bytes.NewReader(prof))
	if err != nil {
		return 0, fmt.Errorf("parse the CPU profile: %w", err)
	}
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return 0, errors.New("the CPU profile has no cpu samples")
	}
	var ns int64
	for _, smp := range p.Sample {
	stack:
		for _, loc := range smp.Location {
			for _, ln := range loc.Line {
				if ln.Function == nil {
					continue
				}
				for _, n := range names {
					if strings.Contains(ln.Function.Name, n) {
						ns += smp.Value[vi]
						break stack
					}
				}
			}
		}
	}
	return time.Duration(ns), nil
}

// benchView ingests in and publishes it (not measured), then decrypts
// every published hour with view and writes what that cost to
// root+".view" (as benchIngestWarm does); it returns the records decrypted.
// Without crypto, ingest and view run under keyclienttest.Revoked: the same work
// with every PII field null and nothing sealed or opened.
// startProfile is called just before the measured part.
func benchView(ctx context.Context, in, root string, count int, crypto bool, startProfile func() error) (int64, error) {
	var kc keyclient.Keys = keyclienttest.Revoked{}
	if crypto {
		c, err := benchKeys()
		if err != nil {
			return 0, err
		}
		kc = c
	}
	if err := benchIngest(ctx, kc, in, root, count); err != nil {
		return 0, err
	}
	if err := benchHourly(ctx, root); err != nil {
		return 0, err
	}
	bk, err := blob.Open(ctx, root)
	if err != nil {
		return 0, err
	}
	var hours []layout.Hour
	for hr := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC); hr.Before(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)); hr = hr.Add(time.Hour) {
		hs, err := RawHours(ctx, bk, hr)
		if err != nil {
			return 0, err
		}
		hours = append(hours, hs...)
	}
	keys := registerKeys(kc)
	var records int64
	err = measurePart(root+".view", func() error {
		if err := startProfile(); err != nil {
			return err
		}
		for i, h := range hours {
			res, err := View(ctx, ViewConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour,
				Out: filepath.Join(root, fmt.Sprintf("view-%d.ndjson", i)), KeysURL: keys})
			if err != nil {
				return err
			}
			records += res.Records
		}
		return nil
	})
	return records, err
}

// measureView runs view (or view-no-crypto) in a child process (see
// benchView) and returns the cost of decrypting every published hour.
func measureView(b *testing.B, pipeline, round, in, root string, count int) phase {
	return readPart(b, pipeline, root+".view", measure(b, pipeline, round, in, root, count))
}

// benchHourly publishes every (type, hour) the synthetic traffic has.
func benchHourly(ctx context.Context, root string) error {
	bk, err := blob.Open(ctx, root)
	if err != nil {
		return err
	}
	var cfgs []HourlyConfig
	for hr := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC); hr.Before(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)); hr = hr.Add(time.Hour) {
		hs, err := RawHours(ctx, bk, hr)
		if err != nil {
			return err
		}
		for _, h := range hs {
			cfgs = append(cfgs, HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour})
		}
	}
	if len(cfgs) == 0 {
		return errors.New("no raw hours to publish")
	}
	for _, o := range HourlyMany(ctx, cfgs) {
		if o.Err != nil {
			return o.Err
		}
	}
	return nil
}

// median is the middle of xs (the upper one of an even count); it sorts xs.
func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// BenchmarkEndToEnd runs ingest + hourly on prism over synthetic traffic
// (LOCKSTREAM_BENCH_EVENTS, default 200k; `make bench BENCH_EVENTS=1000000`
// for the 1M figure), against the pass-through baselines in the same run,
// each pipeline in a process of its own (see measure).
// Keys come from an in-process fake service behind the real keyclient, so
// the key service itself is not measured here (keyservice/server has its
// own load benchmark). LOCKSTREAM_BENCH_PROFILE=DIR writes each pipeline's
// CPU and allocation profiles there. With -benchmem, B/op and allocs/op are
// the parent's (which only starts the pipelines), not the pipelines'.
//
// Each round also runs ingest and hourly without encryption
// (ingest-no-crypto: keyclienttest.Revoked, every PII field null, no keys or
// ciphers) and reports ratio-no-crypto-median: what lockstream's pipeline
// shape alone (validation, hour buckets, dead letters, records, dedupe,
// manifests) costs against the baseline, the floor of the ratio.
//
// Each round also views every published hour, with encryption
// (view) and without (view-no-crypto: the hours of an ingest under
// keyclienttest.Revoked, each subject answered as revoked, so records are read and
// written as NDJSON with nothing looked up or opened), each in a process
// that first ran its own ingest and hourly. view-crypto-cpu-us-per-record
// is their difference over the records, measured as crypto-cpu-us-per-msg
// is for ingest; view-keysvc-cpu-us-per-record the fake key service's
// share of it (medians of the rounds: view without encryption has
// measured 1.0 to 2.1 µs of CPU per record from one run to the next).
//
// LOCKSTREAM_BENCH_KEY_LATENCY=2ms makes the fake key service answer each
// call that much later, as a key server across a network would (its CPU
// stays in the process): what the slices' waits for keys cost ingest.
//
// LOCKSTREAM_BENCH_WARM=1 adds, after each round, ingest with warm caches
// (benchIngestWarm: every user's keys and ciphers already built, as in a
// streaming ingest that has been running) and reports ingest-warm-s and
// ratio-warm-median: how much of ingest's cost is the one-time cost per
// user. The acceptance figure is the cold ratio.
func BenchmarkEndToEnd(b *testing.B) {
	n := benchEvents()
	dir := b.TempDir()
	if pdir := os.Getenv(benchProfileEnv); pdir != "" {
		// Made here, once: each child only creates its files in it.
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			b.Fatalf("%s: %v", benchProfileEnv, err)
		}
	}
	// PlaybackEvent v3: each also seals a deterministic (AES-SIV) field.
	tr := synth.Generate(synth.Config{Events: n, Users: max(n/20, 10), Hours: 3, Seed: 11, PlaybackVersion: 3})
	in := filepath.Join(dir, "in.ndjson")
	writeReplay(b, in, tr.Messages)
	count := len(tr.Messages)
	msgs := float64(count)
	// One round: both baselines, ingest + hourly for every (type, hour),
	// then both again without encryption, each into its own directory.
	// Before each pipeline the page cache is flushed (untimed), so that
	// none pays for writing back the last one's output.
	warm := os.Getenv(benchWarmEnv) != ""
	round := func(i string) (r benchRound) {
		run := func(pipeline, root string) phase {
			syscall.Sync()
			return measure(b, pipeline, i, in, filepath.Join(dir, root+"-"+i), count)
		}
		r.pass = run("baseline", "pass")
		r.passOCF = run("baseline-ocf", "passocf")
		r.ingest = run("ingest", "real")
		r.hourly = run("hourly", "real")
		r.plainIngest = run("ingest-no-crypto", "plain")
		r.plainHourly = run("hourly-no-crypto", "plain")
		b.Logf("round %s, %d messages: baseline %s; baseline-ocf %s; ingest %s; hourly %s; ratio %.2f (user CPU %.2f)", i, count, r.pass, r.passOCF, r.ingest, r.hourly, r.ratio(), r.userRatio())
		// Three lines a round: the testing package prints a benchmark's
		// first 10 lines of log only, and -benchtime 3x is the run to quote.
		b.Logf("round %s: without encryption: ingest %s; hourly %s; ratio %.2f. Keys and encryption: %.2f µs of CPU per message (%.2f µs of it in the fake key service), %.0f bytes allocated per message (%.0f without encryption); events/s %.0f (%.0f without); wall ratio %.2f, CPU ratio %.2f to the pipeline without encryption",
			i, r.plainIngest, r.plainHourly, r.noCryptoRatio(), r.cryptoCPU(msgs), float64(r.ingest.keysCPU.Nanoseconds())/msgs/1e3, float64(r.ingest.alloc)/msgs, float64(r.plainIngest.alloc)/msgs,
			msgs/(r.ingest.wall+r.hourly.wall).Seconds(), msgs/(r.plainIngest.wall+r.plainHourly.wall).Seconds(), r.noCryptoWallRatio(), r.noCryptoCPURatio())
		syscall.Sync()
		r.view = measureView(b, "view", i, in, filepath.Join(dir, "view-"+i), count)
		syscall.Sync()
		r.plainView = measureView(b, "view-no-crypto", i, in, filepath.Join(dir, "plainview-"+i), count)
		if r.plainView.records != r.view.records {
			b.Fatalf("view without encryption wrote %d records, with it %d", r.plainView.records, r.view.records)
		}
		b.Logf("round %s: view of every published hour: %s, %d records, %.2f µs of CPU per record (%.2f µs of it in key lookups and opening fields); without encryption %s, %.2f µs; keys and decryption %.2f µs of CPU per record (%.2f µs of it in the fake key service)",
			i, r.view, r.view.records, r.viewCPU(), r.viewDecryptCPU(), r.plainView, r.plainViewCPU(), r.viewCryptoCPU(), r.perRecord(r.view.keysCPU))
		if warm {
			syscall.Sync()
			r.warm = measureWarm(b, i, in, filepath.Join(dir, "warm-"+i), count)
			b.Logf("round %s: ingest with warm caches %s; ratio with it %.2f", i, r.warm, r.warmRatio())
		}
		// ~2 GB of output per round at 1M events.
		for _, d := range []string{"pass-" + i, "passocf-" + i, "real-" + i, "plain-" + i, "warm-" + i, "warm-" + i + "-first", "view-" + i, "plainview-" + i} {
			if err := os.RemoveAll(filepath.Join(dir, d)); err != nil {
				b.Fatal(err)
			}
		}
		return r
	}
	syscall.Sync()
	var pass, passOCF, real, ingestT, ingestCPU, hourlyCPU time.Duration
	var ingestRSS, hourlyRSS int64
	var ratios, userRatios, noCryptoRatios, warmRatios []float64
	var cryptoCPU, keysCPU, allocs, plainAllocs, evs, plainEvs, wallVsPlain, cpuVsPlain, cpuRatios []float64
	var plainRSS int64
	var viewCPU, viewDecryptCPU, plainViewCPU, viewCryptoCPU, viewKeysCPU []float64
	var warmT time.Duration
	for i := 0; b.Loop(); i++ {
		r := round(strconv.Itoa(i))
		cryptoCPU = append(cryptoCPU, r.cryptoCPU(msgs))
		keysCPU = append(keysCPU, float64(r.ingest.keysCPU.Nanoseconds())/msgs/1e3)
		allocs = append(allocs, float64(r.ingest.alloc)/msgs)
		plainAllocs = append(plainAllocs, float64(r.plainIngest.alloc)/msgs)
		evs = append(evs, msgs/(r.ingest.wall+r.hourly.wall).Seconds())
		plainEvs = append(plainEvs, msgs/(r.plainIngest.wall+r.plainHourly.wall).Seconds())
		wallVsPlain = append(wallVsPlain, r.noCryptoWallRatio())
		cpuVsPlain = append(cpuVsPlain, r.noCryptoCPURatio())
		cpuRatios = append(cpuRatios, r.cpuRatio())
		plainRSS = max(plainRSS, r.plainIngest.rss)
		viewCPU, viewDecryptCPU = append(viewCPU, r.viewCPU()), append(viewDecryptCPU, r.viewDecryptCPU())
		plainViewCPU, viewCryptoCPU = append(plainViewCPU, r.plainViewCPU()), append(viewCryptoCPU, r.viewCryptoCPU())
		viewKeysCPU = append(viewKeysCPU, r.perRecord(r.view.keysCPU))
		ratios = append(ratios, r.ratio())
		userRatios = append(userRatios, r.userRatio())
		noCryptoRatios = append(noCryptoRatios, r.noCryptoRatio())
		if warm {
			warmRatios = append(warmRatios, r.warmRatio())
			warmT += r.warm.wall
		}
		pass += r.pass.wall
		passOCF += r.passOCF.wall
		ingestT += r.ingest.wall
		real += r.ingest.wall + r.hourly.wall
		ingestCPU += r.ingest.cpu
		hourlyCPU += r.hourly.cpu
		ingestRSS, hourlyRSS = max(ingestRSS, r.ingest.rss), max(hourlyRSS, r.hourly.rss)
	}
	runs := float64(b.N)
	b.ReportMetric(msgs*runs/real.Seconds(), "events/s")
	b.ReportMetric(msgs*runs/pass.Seconds(), "baseline-events/s")
	b.ReportMetric(real.Seconds()/pass.Seconds(), "ratio")
	// With -benchtime 3x or more, the median is the figure to quote.
	b.ReportMetric(median(ratios), "ratio-median")
	b.ReportMetric(median(userRatios), "ratio-user-cpu-median")
	b.ReportMetric(median(noCryptoRatios), "ratio-no-crypto-median")
	b.ReportMetric(msgs*runs/passOCF.Seconds(), "baseline-ocf-events/s")
	b.ReportMetric(real.Seconds()/passOCF.Seconds(), "ratio-ocf")
	b.ReportMetric(passOCF.Seconds()/runs, "baseline-ocf-s")
	b.ReportMetric(ingestT.Seconds()/runs, "ingest-s")
	b.ReportMetric((real-ingestT).Seconds()/runs, "hourly-s")
	b.ReportMetric(pass.Seconds()/runs, "baseline-s")
	// CPU time of the process over wall time: 2.0 would be both cores busy.
	b.ReportMetric(ingestCPU.Seconds()/ingestT.Seconds(), "ingest-cores")
	b.ReportMetric(hourlyCPU.Seconds()/(real-ingestT).Seconds(), "hourly-cores")
	// Peak RSS of each pipeline's process, the highest of the rounds.
	b.ReportMetric(float64(ingestRSS>>20), "ingest-peak-rss-MB")
	b.ReportMetric(float64(plainRSS>>20), "ingest-no-crypto-peak-rss-MB")
	b.ReportMetric(float64(hourlyRSS>>20), "hourly-peak-rss-MB")
	// What keys and encryption cost (medians of the rounds).
	b.ReportMetric(median(cryptoCPU), "crypto-cpu-us-per-msg")
	b.ReportMetric(median(keysCPU), "keysvc-cpu-us-per-msg")
	b.ReportMetric(median(allocs), "ingest-alloc-bytes-per-msg")
	b.ReportMetric(median(plainAllocs), "ingest-no-crypto-alloc-bytes-per-msg")
	b.ReportMetric(median(evs), "events/s-median")
	b.ReportMetric(median(plainEvs), "no-crypto-events/s-median")
	b.ReportMetric(median(wallVsPlain), "ratio-to-no-crypto-median")
	b.ReportMetric(median(cpuVsPlain), "cpu-ratio-to-no-crypto-median")
	b.ReportMetric(median(cpuRatios), "cpu-ratio-median")
	b.ReportMetric(median(viewCPU), "view-cpu-us-per-record")
	b.ReportMetric(median(viewDecryptCPU), "view-decrypt-cpu-us-per-record")
	// What keys and decryption cost view, as crypto-cpu-us-per-msg is for
	// ingest: its CPU minus that of view over the hours without encryption.
	b.ReportMetric(median(plainViewCPU), "view-no-crypto-cpu-us-per-record")
	b.ReportMetric(median(viewCryptoCPU), "view-crypto-cpu-us-per-record")
	b.ReportMetric(median(viewKeysCPU), "view-keysvc-cpu-us-per-record")
	if warm {
		b.ReportMetric(warmT.Seconds()/runs, "ingest-warm-s")
		b.ReportMetric(median(warmRatios), "ratio-warm-median")
	}
}
