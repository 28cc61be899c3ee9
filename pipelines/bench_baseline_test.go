package pipelines

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"strconv"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/transforms"
)

// The pass-through baselines of BenchmarkEndToEnd: ingest + hourly's shape
// (same replay source, a file per batch, the same shuffles, a file per
// shard) without validation, encryption, keys or dedupe.

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

type passReadFn struct {
	Root   string
	Shards int
	OCF    bool
}

func (fn *passReadFn) ProcessElement(ctx context.Context, name string, emit func(int, []byte)) error {
	bk, err := blob.Open(ctx, fn.Root)
	if err != nil {
		return err
	}
	// Like transforms.Publish: one element per (file, shard), not per line.
	batches := make([][]byte, fn.Shards)
	// add appends one line (and its newline) to its shard's batch.
	add := func(line []byte) {
		id, _, _ := bytes.Cut(line, []byte{'\t'})
		h := fnv.New32a()
		h.Write(id)
		sh := int(h.Sum32() % uint32(fn.Shards))
		batches[sh] = append(append(batches[sh], line...), '\n')
	}
	if fn.OCF {
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
				break
			}
			if err != nil {
				return err
			}
			_, k := binary.Varint(rec)
			add(rec[k : len(rec)-1]) // the record holds the newline
		}
	} else {
		data, err := blob.ReadAll(ctx, bk, name)
		if err != nil {
			return err
		}
		for len(data) > 0 {
			line, rest, _ := bytes.Cut(data, []byte{'\n'})
			add(line)
			data = rest
		}
	}
	for sh, b := range batches {
		if len(b) > 0 {
			emit(sh, b)
		}
	}
	return nil
}

type passShardFn struct {
	Root string
	OCF  bool
}

func (fn *passShardFn) ProcessElement(ctx context.Context, shard int, lines func(*[]byte) bool, emit func(string)) error {
	name := "passout/" + strconv.Itoa(shard)
	f, err := createPass(ctx, fn.Root, name, fn.OCF)
	if err != nil {
		return err
	}
	var batch []byte
	for lines(&batch) { // a batch of newline-terminated lines
		for len(batch) > 0 {
			i := bytes.IndexByte(batch, '\n')
			if err := f.line(batch[:i+1]); err != nil {
				return err
			}
			batch = batch[i+1:]
		}
	}
	if err := f.close(); err != nil {
		return err
	}
	emit(name)
	return nil
}

// runBaseline runs a pass-through baseline over the replay file in.
func runBaseline(ctx context.Context, in, root, runID string, ocf bool) error {
	p, s := beam.NewPipelineWithRoot()
	batches, err := transforms.ReadReplay(s, transforms.ReplayConfig{Files: []string{in}, BatchSize: DefaultReplayBatchSize, RunID: runID, Fallback: time.Now()})
	if err != nil {
		return err
	}
	names := beam.ParDo(s, &passWriteFn{Root: root, OCF: ocf}, batches)
	keyed := beam.ParDo(s, &passReadFn{Root: root, Shards: DefaultShards, OCF: ocf}, beam.Reshuffle(s, names))
	transforms.EndBranch(s, beam.ParDo(s, &passShardFn{Root: root, OCF: ocf}, beam.GroupByKey(s, keyed)))
	_, err = beamx.RunWithMetrics(ctx, p)
	return err
}
