package pipelines

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// The pass-through baselines of BenchmarkEndToEnd: ingest + hourly's shape
// (same replay source, a file per batch, then one bundle that reads every
// batch's file once into a file per shard) without validation, encryption,
// keys or dedupe.

// passSchema is the schema of baseline-ocf's records: the message id, a
// tab and the payload.
var passSchema = []byte(`{"type":"record","name":"Pass","fields":[{"name":"line","type":"bytes"}]}`)

// passSkip is the record.OCFReader skip function of passSchema.
func passSkip(b []byte) (int, error) {
	n, k := binary.Varint(b)
	if k <= 0 || n < 0 || int64(len(b)-k) < n {
		return 0, errors.New("bad record")
	}
	return k + int(n), nil
}

// passFile writes lines (each newline-terminated) as plain text or OCF.
type passFile struct {
	w   blob.Writer
	bw  *bufio.Writer
	ocf *record.OCFWriter
	rec []byte
}

func createPass(ctx context.Context, root, name string, ocf bool) (*passFile, error) {
	bk, err := blob.Open(ctx, root)
	if err != nil {
		return nil, err
	}
	w, err := bk.Create(ctx, name)
	if err != nil {
		return nil, err
	}
	f := &passFile{w: w}
	if ocf {
		f.ocf, err = record.NewOCFWriter(w, passSchema, record.SyncMarker(name), transforms.FileCodec)
		return f, err
	}
	f.bw = bufio.NewWriter(w)
	return f, nil
}

func (f *passFile) line(l []byte) error {
	if f.ocf == nil {
		_, err := f.bw.Write(l)
		return err
	}
	f.rec = binary.AppendVarint(f.rec[:0], int64(len(l)))
	return f.ocf.Append(append(f.rec, l...))
}

func (f *passFile) close() error {
	var err error
	if f.ocf != nil {
		err = f.ocf.Close()
	} else {
		err = f.bw.Flush()
	}
	if err != nil {
		f.w.Abort()
		return err
	}
	return f.w.Close()
}

type passWriteFn struct {
	Root string
	OCF  bool
}

func (fn *passWriteFn) ProcessElement(ctx context.Context, b transforms.Batch, emit func(string)) error {
	f, err := createPass(ctx, fn.Root, "pass/"+b.ID, fn.OCF)
	if err != nil {
		return err
	}
	var l []byte
	for _, m := range b.Messages {
		l = append(append(append(append(l[:0], m.ID...), '\t'), m.Data...), '\n')
		if err := f.line(l); err != nil {
			return err
		}
	}
	if err := f.close(); err != nil {
		return err
	}
	emit("pass/" + b.ID)
	return nil
}

// passShardsFn writes the shard files: like transforms.Publish up to
// transforms.DirectShards shards, it reads every file written once and
// writes each line to its shard's file (all of them open at once).
type passShardsFn struct {
	Root   string
	Shards int
	OCF    bool
}

func (fn *passShardsFn) ProcessElement(ctx context.Context, _ []byte, files func(*string) bool, emit func(string)) error {
	bk, err := blob.Open(ctx, fn.Root)
	if err != nil {
		return err
	}
	outs := make([]*passFile, fn.Shards)
	abort := func() {
		for _, o := range outs {
			if o != nil {
				o.w.Abort()
			}
		}
	}
	for sh := range outs {
		if outs[sh], err = createPass(ctx, fn.Root, passOut(sh), fn.OCF); err != nil {
			abort()
			return err
		}
	}
	var kept []byte
	keep := func(line []byte) error {
		id, _, _ := bytes.Cut(line, []byte{'\t'})
		h := fnv.New32a()
		h.Write(id)
		kept = append(append(kept[:0], line...), '\n')
		return outs[h.Sum32()%uint32(fn.Shards)].line(kept)
	}
	var file string
	for files(&file) {
		if err := fn.read(ctx, bk, file, keep); err != nil {
			abort()
			return err
		}
	}
	for sh, o := range outs {
		outs[sh] = nil
		if err := o.close(); err != nil {
			abort()
			return err
		}
		emit(passOut(sh))
	}
	return nil
}

// passOut names the file of shard sh.
func passOut(sh int) string { return "passout/" + strconv.Itoa(sh) }

// read calls keep with every line of one file written by passWriteFn.
func (fn *passShardsFn) read(ctx context.Context, bk blob.Bucket, name string, keep func([]byte) error) error {
	if !fn.OCF {
		data, err := blob.ReadAll(ctx, bk, name)
		if err != nil {
			return err
		}
		for len(data) > 0 {
			line, rest, _ := bytes.Cut(data, []byte{'\n'})
			if err := keep(line); err != nil {
				return err
			}
			data = rest
		}
		return nil
	}
	r, err := bk.Open(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	or, err := record.NewOCFReader(r, passSkip)
	if err != nil {
		return err
	}
	for {
		rec, err := or.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		_, k := binary.Varint(rec)
		if err := keep(rec[k : len(rec)-1]); err != nil { // the record holds the newline
			return err
		}
	}
}

// runBaseline runs a pass-through baseline over the replay file in.
func runBaseline(ctx context.Context, in, root, runID string, ocf bool) error {
	p, s := beam.NewPipelineWithRoot()
	batches, err := transforms.ReadReplay(s, transforms.ReplayConfig{Files: []string{in}, BatchSize: DefaultReplayBatchSize, RunID: runID, Fallback: time.Now()})
	if err != nil {
		return err
	}
	names := beam.ParDo(s, &passWriteFn{Root: root, OCF: ocf}, batches)
	written := beam.ParDo(s, &passShardsFn{Root: root, Shards: DefaultShards, OCF: ocf},
		beam.Impulse(s), beam.SideInput{Input: names})
	transforms.EndBranch(s, written)
	_, err = beamx.RunWithMetrics(ctx, p)
	return err
}

// TestBaselinePassesEveryLine: both baselines write every replay line once
// across their shard files, so that the benchmark compares like with like.
func TestBaselinePassesEveryLine(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in := synthReplay(t, dir, synth.Config{Events: 3000, Users: 50, Hours: 2, Seed: 5})
	data, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Count(data, []byte{'\n'})
	for _, ocf := range []bool{false, true} {
		root := filepath.Join(dir, "ocf-"+strconv.FormatBool(ocf))
		if err := runBaseline(ctx, in, root, "pass_"+strconv.FormatBool(ocf), ocf); err != nil {
			t.Fatal(err)
		}
		bk, err := blob.Open(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		names, err := bk.List(ctx, "passout/")
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		sh := passShardsFn{Root: root, Shards: DefaultShards, OCF: ocf}
		for _, n := range names {
			if err := sh.read(ctx, bk, n, func([]byte) error { got++; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		if len(names) != DefaultShards || got != want {
			t.Errorf("OCF %v: %d lines in %d shard files, want %d in %d", ocf, got, len(names), want, DefaultShards)
		}
	}
}
