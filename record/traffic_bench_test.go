package record_test

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/s2"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyclient/keyclienttest"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
)

// cpuTime is the CPU the process has used (user and system, every thread:
// the garbage collector's too).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter measures the process's CPU and allocation from its start.
type meter struct {
	cpu0   time.Duration
	alloc0 uint64
}

// startMeter collects garbage, then starts a meter.
func startMeter(b *testing.B) meter {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return meter{cpu0: cpuTime(b), alloc0: ms.TotalAlloc}
}

// report reports CPU ("cpu-ns/<unit>") and allocation ("B/<unit>") per
// unit, over n units since the meter started.
func (m meter) report(b *testing.B, n int, unit string) {
	cpu := cpuTime(b) - m.cpu0
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/"+unit)
	b.ReportMetric(float64(ms.TotalAlloc-m.alloc0)/float64(n), "B/"+unit)
}

// BenchmarkAnonymizeTraffic is the anonymizer alone over the end-to-end
// benchmark's traffic (PlaybackEvent v3 and AccountUpdate, one user in
// twenty events, LOCKSTREAM_BENCH_EVENTS, default 200k), in batches of
// 1000 on one goroutine, each round with a new key client over the
// in-process fake key service (cold caches, as one ingest run): "crypto"
// against "no-crypto" (every category revoked). crypto's cpu-ns/msg
// (the process's CPU: the collector's and the fake key service's too)
// minus no-crypto's is what keys and encryption cost, without a
// pipeline's noise; ns/msg also counts the key client's batch window.
func BenchmarkAnonymizeTraffic(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	const batch = 1000
	tr := synth.Generate(synth.Config{Events: n, Users: max(n/20, 10), Hours: 3, Seed: 11, PlaybackVersion: 3})
	// The traffic is kept as replay lines in one buffer and parsed batch by
	// batch, as ingest reads it: a live heap of a million messages with
	// their attribute maps would make each garbage collection cycle mark
	// them, and weigh allocation far more than in a pipeline.
	var lines []byte
	for _, m := range tr.Messages {
		l, err := m.MarshalLine()
		if err != nil {
			b.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	count := len(tr.Messages)
	tr = nil
	var p record.LineParser
	parsed := make([]record.Message, 0, 1000)
	reg, err := schemas.Embedded()
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, keys func() record.Keys) {
		m := startMeter(b)
		msgs := 0
		for b.Loop() {
			a, err := record.NewAnonymizer(reg, keys(), record.Options{})
			if err != nil {
				b.Fatal(err)
			}
			rest := lines
			for len(rest) > 0 {
				parsed = parsed[:0]
				for len(rest) > 0 && len(parsed) < batch {
					l, after, _ := bytes.Cut(rest, []byte{'\n'})
					rest = after
					m, err := p.Parse(l)
					if err != nil {
						b.Fatal(err)
					}
					parsed = append(parsed, m)
				}
				if _, err := a.Anonymize(context.Background(), parsed); err != nil {
					b.Fatal(err)
				}
			}
			msgs += count
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(msgs), "ns/msg")
		m.report(b, msgs, "msg")
	}
	b.Run("crypto", func(b *testing.B) {
		run(b, func() record.Keys {
			kc, err := keyclient.New(keyclient.NewFake(), keyclient.Options{Scope: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			return kc
		})
	})
	b.Run("no-crypto", func(b *testing.B) {
		run(b, func() record.Keys { return keyclienttest.Revoked{} })
	})
}

// BenchmarkDecryptTraffic is view's per-record work over the same traffic
// (anonymized once; batches of 500 as view's; a key client whose cache
// holds every user's keys, as a worker's after its first files): "plain"
// decrypts into Plain values and writes each with AppendJSON, as view did;
// "json-lines" writes the same bytes with AppendJSONLines.
func BenchmarkDecryptTraffic(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("LOCKSTREAM_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	tr := synth.Generate(synth.Config{Events: n, Users: max(n/20, 10), Hours: 3, Seed: 11, PlaybackVersion: 3})
	reg, err := schemas.Embedded()
	if err != nil {
		b.Fatal(err)
	}
	fake := keyclient.NewFake()
	newKeys := func() *keyclient.Client {
		kc, err := keyclient.New(fake, keyclient.Options{Scope: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		return kc
	}
	a, err := record.NewAnonymizer(reg, newKeys(), record.Options{})
	if err != nil {
		b.Fatal(err)
	}
	type group struct {
		s    *schemas.Schema
		recs [][]byte
	}
	groups := map[string]*group{}
	for rest := tr.Messages; len(rest) > 0; rest = rest[min(1000, len(rest)):] {
		out, err := a.Anonymize(context.Background(), rest[:min(1000, len(rest))])
		if err != nil {
			b.Fatal(err)
		}
		for _, o := range out {
			if o.Reject != nil {
				continue
			}
			k := o.EventType + strconv.Itoa(o.Version)
			g := groups[k]
			if g == nil {
				s, err := reg.Lookup(o.EventType, o.Version)
				if err != nil {
					b.Fatal(err)
				}
				g = &group{s: s}
				groups[k] = g
			}
			g.recs = append(g.recs, o.Record)
		}
	}
	tr = nil
	const batch = 500
	run := func(b *testing.B, write func(d *record.Decryptor, s *schemas.Schema, out []byte, recs [][]byte) []byte) {
		d := record.NewDecryptor(newKeys(), nil)
		var out []byte
		pass := func() (recs int) {
			for _, g := range groups {
				for rest := g.recs; len(rest) > 0; rest = rest[min(batch, len(rest)):] {
					out = write(d, g.s, out[:0], rest[:min(batch, len(rest))])
				}
				recs += len(g.recs)
			}
			return recs
		}
		pass() // fills the key cache
		m := startMeter(b)
		recs := 0
		for b.Loop() {
			recs += pass()
		}
		m.report(b, recs, "record")
	}
	b.Run("plain", func(b *testing.B) {
		run(b, func(d *record.Decryptor, s *schemas.Schema, out []byte, recs [][]byte) []byte {
			plain, errs, err := d.Decrypt(context.Background(), s, recs)
			if err != nil {
				b.Fatal(err)
			}
			for i := range plain {
				if errs[i] != nil {
					b.Fatal(errs[i])
				}
				if out, err = plain[i].AppendJSON(out); err != nil {
					b.Fatal(err)
				}
				out = append(out, '\n')
			}
			return out
		})
	})
	b.Run("json-lines", func(b *testing.B) {
		run(b, func(d *record.Decryptor, s *schemas.Schema, out []byte, recs [][]byte) []byte {
			var t record.Tally
			out, err := d.AppendJSONLines(context.Background(), s, out, recs, &t)
			if err != nil || t.Records != int64(len(recs)) {
				b.Fatalf("%+v, %v", t, err)
			}
			return out
		})
	})
}

// BenchmarkSnappyBlock encodes one OCF block (record.DefaultBlockBytes) of
// the benchmark traffic's encrypted records, mostly ciphertext, with the
// Snappy encoder OCFWriter uses (klauspost/compress/s2's) and with
// github.com/golang/snappy's, the one it used before, in the same run;
// both write Snappy's format. MB/s is of the uncompressed block;
// z/plain is the compressed size over it.
func BenchmarkSnappyBlock(b *testing.B) {
	tr := synth.Generate(synth.Config{Events: 20_000, Users: 1000, Hours: 1, Seed: 11, PlaybackVersion: 3})
	reg, err := schemas.Embedded()
	if err != nil {
		b.Fatal(err)
	}
	kc, err := keyclient.New(keyclient.NewFake(), keyclient.Options{Scope: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	a, err := record.NewAnonymizer(reg, kc, record.Options{})
	if err != nil {
		b.Fatal(err)
	}
	outs, err := a.Anonymize(context.Background(), tr.Messages)
	if err != nil {
		b.Fatal(err)
	}
	var block []byte
	for _, o := range outs {
		if o.Reject == nil && len(block) < record.DefaultBlockBytes {
			block = append(block, o.Record...)
		}
	}
	if len(block) < record.DefaultBlockBytes {
		b.Fatalf("a block of %d bytes, want %d", len(block), record.DefaultBlockBytes)
	}
	for _, enc := range []struct {
		name   string
		encode func(dst, src []byte) []byte
	}{{"s2", s2.EncodeSnappy}, {"golang-snappy", snappy.Encode}} {
		b.Run(enc.name, func(b *testing.B) {
			dst := make([]byte, snappy.MaxEncodedLen(len(block)))
			var z []byte
			b.SetBytes(int64(len(block)))
			for b.Loop() {
				z = enc.encode(dst, block)
			}
			if plain, err := snappy.Decode(nil, z); err != nil || !bytes.Equal(plain, block) {
				b.Fatalf("%s: github.com/golang/snappy does not decode the block back: %v", enc.name, err)
			}
			b.ReportMetric(float64(len(z))/float64(len(block)), "z/plain")
		})
	}
}
