package transforms

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// Publication of one part of one (type, version, hour): read the raw (and
// late) part files given, dedupe by event id, write the part's dataset
// files to the run's staging directory (layout.StagingDir); the driver
// copies them to their final names under its publication lease.
//
// Every record belongs to shard fnv32a(event id) mod Shards, so all copies
// of an event meet in one shard; a shard sorts its records by (event id,
// publish time, bytes) and keeps the first of each event id, which makes
// the output a pure function of the input set — a re-run writes
// byte-identical files. Up to DirectShards shards, each shard reads every
// part file and keeps its own records (readShardFn): only the shard numbers
// cross a shuffle. With more, reading every file once per shard would cost
// more than a shuffle: each part file is read once, its records grouped by
// shard (readPartsFn, then a GroupByKey into writeShardFn). The Avro sync marker is
// derived from the file's final name, never from the staging name, so the
// bytes do not depend on the run that wrote them.

func init() {
	register.DoFn3x1[context.Context, int, func(string), error](&readShardFn{})
	register.DoFn3x1[context.Context, string, func(int, []byte), error](&readPartsFn{})
	register.DoFn4x1[context.Context, int, func(*[]byte) bool, func(string), error](&writeShardFn{})
	register.Emitter2[int, []byte]()
	register.Emitter1[string]()
	register.Iter1[[]byte]()
}

// Metric names of the publication counters (namespace MetricsNamespaceHourly).
const (
	MetricsNamespaceHourly = "lockstream.hourly"
	CountRawRecords        = "raw_records"
	CountLateRecords       = "late_records"
	CountDuplicates        = "duplicates_dropped"
	CountLookback          = "lookback_dropped"
	CountPublished         = "published"
)

// PublishConfig configures Publish.
type PublishConfig struct {
	Root    string
	Type    string
	Version int
	Hour    time.Time
	// RunID names the hourly run: its files go to its own staging
	// directory, layout.StagingDir(RunID, ...), which no other run touches.
	RunID string
	// Part is the part published: layout.MainPart or a supplement
	// ("late-0001", layout.SupplementPart).
	Part   string
	Shards int // number of output files (>= 1)
	// Lookback are the published dataset files (root-relative) whose event
	// ids this part must not repeat: every part of the neighbouring hours
	// within the lookback and, for a supplement, the hour's earlier parts.
	// Their records are dropped and counted as lookback.
	Lookback []string
	// LookbackSHA256 has, aligned with Lookback, each file's checksum from
	// its manifest ("" unknown): a file this process wrote with exactly
	// that checksum is not read back for its ids.
	LookbackSHA256 []string
}

// Validate checks the configuration when the transform is built.
func (c *PublishConfig) Validate() error {
	if c.Root == "" || c.Type == "" || c.Version < 1 || c.Hour.IsZero() {
		return errors.New("transforms.Publish: Root, Type, Version and Hour are required")
	}
	if err := validRunID(c.RunID); err != nil {
		return fmt.Errorf("transforms.Publish: %w", err)
	}
	if _, ok := layout.ParseSupplementPart(c.Part); c.Part != layout.MainPart && !ok {
		return fmt.Errorf("transforms.Publish: Part %q is neither %q nor a supplement (late-0001)", c.Part, layout.MainPart)
	}
	if c.Shards < 1 || c.Shards > 10000 {
		return fmt.Errorf("transforms.Publish: Shards %d not in 1..10000", c.Shards)
	}
	if !c.Hour.Equal(c.Hour.Truncate(time.Hour)) {
		return errors.New("transforms.Publish: Hour is not the start of an hour")
	}
	return nil
}

// ShardStats is the accounting of one shard of a publication.
type ShardStats struct {
	Shard      int   `json:"shard"`
	Raw        int64 `json:"raw"`  // records read from raw part files
	Late       int64 `json:"late"` // records read from late part files
	Duplicates int64 `json:"duplicates"`
	Lookback   int64 `json:"lookback"`
	Published  int64 `json:"published"`
	// File is the dataset file written (base name, layout.ShardFile; ""
	// when every record was dropped) and SHA256 the checksum of its bytes
	// as written: the driver checks what it publishes against it.
	File   string `json:"file,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// Publish reads the given raw/late part files and writes the deduplicated
// dataset files of one part of an hour to the run's staging directory
// (layout.StagingDir + layout.ShardFile), with one ShardStats object per
// shard (layout.StatsName). It returns the staged names of the files written.
func Publish(s beam.Scope, cfg PublishConfig, parts []string) (beam.PCollection, error) {
	if err := cfg.Validate(); err != nil {
		return beam.PCollection{}, err
	}
	s = s.Scope("Publish")
	r := partReader{Root: cfg.Root, Type: cfg.Type, Version: cfg.Version, Shards: cfg.Shards}
	w := shardWriter{Root: cfg.Root, Type: cfg.Type, Version: cfg.Version,
		HourMillis: cfg.Hour.UnixMilli(), RunID: cfg.RunID, Part: cfg.Part, Shards: cfg.Shards,
		Lookback: cfg.Lookback, LookbackSHA256: cfg.LookbackSHA256}
	if cfg.Shards <= DirectShards {
		shards := make([]int, cfg.Shards)
		for i := range shards {
			shards[i] = i
		}
		col := beam.CreateList(s, shards)
		if cfg.Shards > 1 {
			// The shards are written in parallel bundles (on Dataflow, by
			// several workers).
			col = beam.Reshuffle(s, col)
		}
		return beam.ParDo(s, &readShardFn{R: r, W: w, Parts: parts}, col), nil
	}
	files := beam.CreateList(s, parts)
	keyed := beam.ParDo(s, &readPartsFn{R: r}, files)
	grouped := beam.GroupByKey(s, keyed)
	return beam.ParDo(s, &writeShardFn{W: w}, grouped), nil
}

// DirectShards is the most shards a publication writes by having each
// shard read every part file (readShardFn). Each file is then decoded once
// per shard; on prism that costs less than a shuffle of the records, whose
// bytes are copied several times over (the data channel, the runner's
// grouping and its buffers).
const DirectShards = 8

// readShardFn reads the records of one shard from every part file, then
// writes the shard's dataset file.
type readShardFn struct {
	R     partReader
	W     shardWriter
	Parts []string // the raw and late part files

	arena shardArena
}

func (fn *readShardFn) Setup(ctx context.Context) error {
	if err := fn.R.setup(ctx); err != nil {
		return err
	}
	return fn.W.setup(ctx, fn.R.bucket)
}

func (fn *readShardFn) ProcessElement(ctx context.Context, shard int, emit func(string)) error {
	var all []framed
	var st ShardStats
	fn.arena.reset()
	defer fn.arena.reset()
	for _, name := range fn.Parts {
		var n int64
		late, err := fn.R.read(ctx, name, func(sh int, r framed) {
			if sh == shard {
				r.id, r.rec = fn.arena.copy(r.id), fn.arena.copy(r.rec)
				all = append(all, r)
				n++
			}
		})
		if err != nil {
			return err
		}
		if late {
			st.Late += n
		} else {
			st.Raw += n
		}
		countRead(ctx, late, n)
	}
	return fn.W.write(ctx, shard, all, st, emit)
}

// countRead counts n records read from a raw or late part file (a Beam
// counter, for monitoring: the stats objects carry the accounting).
func countRead(ctx context.Context, late bool, n int64) {
	counter := CountRawRecords
	if late {
		counter = CountLateRecords
	}
	beam.NewCounter(MetricsNamespaceHourly, counter).Inc(ctx, n)
}

// shardArena holds the bytes of a shard's records in chunks that never
// move, so that the slices it hands out stay valid as it grows; reset
// keeps the first chunk for the next shard.
type shardArena struct {
	chunks [][]byte
}

const arenaChunk = 4 << 20

// copy returns a copy of b in the arena.
func (a *shardArena) copy(b []byte) []byte {
	n := len(a.chunks)
	if n == 0 || cap(a.chunks[n-1])-len(a.chunks[n-1]) < len(b) {
		a.chunks = append(a.chunks, make([]byte, 0, max(arenaChunk, len(b))))
		n++
	}
	c := a.chunks[n-1]
	start := len(c)
	c = append(c, b...)
	a.chunks[n-1] = c
	return c[start:len(c):len(c)]
}

func (a *shardArena) reset() {
	if len(a.chunks) > 0 {
		clear(a.chunks[1:])
		a.chunks = append(a.chunks[:0], a.chunks[0][:0])
	}
}

// readPartsFn reads one part file and emits, per shard, one element holding
// all of the file's records of that shard (framed: see appendFramed). A
// shuffle costs per element, not per byte: one element per (file, shard)
// instead of one per record made the shuffle of an hour a few dozen elements.
type readPartsFn struct {
	R partReader
}

func (fn *readPartsFn) Setup(ctx context.Context) error { return fn.R.setup(ctx) }

func (fn *readPartsFn) ProcessElement(ctx context.Context, name string, emit func(int, []byte)) error {
	batches := make([][]byte, fn.R.Shards)
	var n int64
	late, err := fn.R.read(ctx, name, func(sh int, r framed) {
		batches[sh] = appendFramed(batches[sh], r)
		n++
	})
	if err != nil {
		return err
	}
	for sh, b := range batches {
		if len(b) > 0 {
			emit(sh, b)
		}
	}
	countRead(ctx, late, n)
	return nil
}

// partReader reads the part files of a publication, both shapes': each
// record with its shard and what the shard needs of it.
type partReader struct {
	Root    string
	Type    string
	Version int
	Shards  int

	bucket blob.Bucket
	lay    *record.Layout
	cols   []record.Column
}

func (r *partReader) setup(ctx context.Context) error {
	var err error
	if r.bucket, err = blob.Open(ctx, r.Root); err != nil {
		return err
	}
	if _, r.lay, err = dataset.Schema(r.Type, r.Version); err != nil {
		return err
	}
	r.cols = make([]record.Column, len(r.lay.Enc.Fields))
	return nil
}

// read calls fn with every record of part file name and its shard (the
// record's id and bytes are valid during the call only) and reports
// whether the file is in the late area.
func (r *partReader) read(ctx context.Context, name string, fn func(shard int, rec framed)) (late bool, err error) {
	late = strings.HasPrefix(name, layout.LateArea+"/")
	err = dataset.ReadFile(ctx, r.bucket, name, r.lay, r.cols, func(cols []record.Column, lay *record.Layout, rec []byte) {
		id := cols[lay.Dedupe].Bytes
		fn(shardOf(id, r.Shards), framed{late: late, pub: cols[lay.PublishTime].Int, id: id, rec: rec})
	})
	if err != nil {
		return late, fmt.Errorf("transforms.Publish: %s: %w", name, err)
	}
	return late, nil
}

// framed is one record of a shard with what the shard needs of it,
// decoded once where the record is read: its event id and publish time,
// and whether it came from the late area. id and rec alias the shard batch
// or the arena they were read into.
type framed struct {
	late    bool
	pub     int64
	id, rec []byte
}

// appendFramed appends one record to a shard batch: a flag byte (1 = from
// the late area), the publish time (varint), then the event id and the
// record, each behind its uvarint length.
func appendFramed(b []byte, r framed) []byte {
	flag := byte(0)
	if r.late {
		flag = 1
	}
	b = binary.AppendVarint(append(b, flag), r.pub)
	b = append(binary.AppendUvarint(b, uint64(len(r.id))), r.id...)
	return append(binary.AppendUvarint(b, uint64(len(r.rec))), r.rec...)
}

var errMalformedBatch = errors.New("malformed shard batch")

// forEachFramed calls fn with every record of a shard batch.
func forEachFramed(b []byte, fn func(r framed) error) error {
	for len(b) > 0 {
		var r framed
		r.late = b[0] == 1
		pub, k := binary.Varint(b[1:])
		if k <= 0 {
			return errMalformedBatch
		}
		r.pub, b = pub, b[1+k:]
		var ok bool
		if r.id, b, ok = cutFramed(b); !ok {
			return errMalformedBatch
		}
		if r.rec, b, ok = cutFramed(b); !ok {
			return errMalformedBatch
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// cutFramed splits a uvarint-length-prefixed field off b.
func cutFramed(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// shardOf is fnv32a(event id) mod n.
func shardOf[T string | []byte](eventID T, n int) int {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(eventID); i++ {
		h = (h ^ uint32(eventID[i])) * prime
	}
	return int(h % uint32(n))
}

// shardWriter writes the dataset file of one shard of a publication and
// its stats object: what both publication shapes share.
type shardWriter struct {
	Root       string
	Type       string
	Version    int
	HourMillis int64
	RunID      string
	Part       string
	Shards     int
	Lookback   []string
	// LookbackSHA256: see PublishConfig.
	LookbackSHA256 []string

	bucket blob.Bucket
	schema *schemas.Schema
}

// setup opens the root, unless b is it opened already.
func (w *shardWriter) setup(ctx context.Context, b blob.Bucket) error {
	var err error
	if b == nil {
		if b, err = blob.Open(ctx, w.Root); err != nil {
			return err
		}
	}
	w.bucket = b
	w.schema, _, err = dataset.Schema(w.Type, w.Version)
	return err
}

// writeShardFn writes one shard from its records grouped by the shuffle
// (framed batches from readPartsFn).
type writeShardFn struct {
	W shardWriter
}

func (fn *writeShardFn) Setup(ctx context.Context) error { return fn.W.setup(ctx, nil) }

func (fn *writeShardFn) ProcessElement(ctx context.Context, shard int, recs func(*[]byte) bool, emit func(string)) error {
	var all []framed
	var st ShardStats
	var batch []byte
	for recs(&batch) {
		err := forEachFramed(batch, func(r framed) error {
			if r.late {
				st.Late++
			} else {
				st.Raw++
			}
			all = append(all, r)
			return nil
		})
		if err != nil {
			return fmt.Errorf("transforms.Publish: shard %d: %w", shard, err)
		}
	}
	return fn.W.write(ctx, shard, all, st, emit)
}

// write dedupes the records of shard (all, read with the counts of st)
// against each other and the lookback, writes the shard's dataset file to
// the run's staging directory, then its stats object, and emits the file's
// staged name.
func (w *shardWriter) write(ctx context.Context, shard int, all []framed, st ShardStats, emit func(string)) error {
	seen, err := lookbackIDs(ctx, w.bucket, w.Type, w.Version, w.Lookback, w.LookbackSHA256, w.Shards)
	if err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b framed) int {
		if c := bytes.Compare(a.id, b.id); c != 0 {
			return c
		}
		if c := cmp.Compare(a.pub, b.pub); c != 0 {
			return c
		}
		return bytes.Compare(a.rec, b.rec)
	})
	hour := time.UnixMilli(w.HourMillis).UTC()
	base := layout.ShardFile(shard, w.Shards)
	// The final name, not the staged one: the bytes are a function of the
	// input set and the file's place in the dataset, never of the run.
	final := layout.PartDir(w.Type, w.Version, hour, w.Part) + base
	staged := layout.StagingDir(w.RunID, w.Type, w.Version, hour, w.Part) + base
	var buf bytes.Buffer
	ow, err := record.NewOCFWriter(&buf, w.schema.Encrypted().JSON, record.SyncMarker(final), FileCodec)
	if err != nil {
		return err
	}
	var dups, back, published int64
	kept := &idList{} // the event ids of the file
	for i := range all {
		if i > 0 && bytes.Equal(all[i].id, all[i-1].id) {
			dups++
			continue
		}
		if seen[shard].has(all[i].id) {
			back++
			continue
		}
		if err := ow.Append(all[i].rec); err != nil {
			return err
		}
		kept.add(all[i].id)
		published++
	}
	if err := ow.Close(); err != nil {
		return err
	}
	beam.NewCounter(MetricsNamespaceHourly, CountDuplicates).Inc(ctx, dups)
	beam.NewCounter(MetricsNamespaceHourly, CountLookback).Inc(ctx, back)
	beam.NewCounter(MetricsNamespaceHourly, CountPublished).Inc(ctx, published)
	st.Shard, st.Duplicates, st.Lookback, st.Published = shard, dups, back, published
	if published > 0 {
		st.File, st.SHA256 = base, hex.EncodeToString(sum(buf.Bytes()))
		// The staging directory is this run's alone: what is there is a
		// retried bundle's (or an earlier attempt of this run's), replaced.
		if err := replaceObject(ctx, w.bucket, staged, buf.Bytes()); err != nil {
			return fmt.Errorf("transforms.Publish: %w", err)
		}
		rememberWritten(w.bucket.Root(), final, st.SHA256, kept)
	}
	// The accounting travels in a small stats object per shard, not in Beam
	// metrics: runner metrics are for monitoring (prism was seen to lose
	// counter updates of large bundles), the manifest must be exact. It is
	// written after the shard's file: a stats object means the shard is done.
	js, err := json.Marshal(st)
	if err != nil {
		return err
	}
	statsName := layout.StatsName(w.RunID, w.Type, w.Version, hour, w.Part, shard)
	if err := replaceObject(ctx, w.bucket, statsName, js); err != nil {
		return fmt.Errorf("transforms.Publish: %w", err)
	}
	if published > 0 {
		emit(staged)
	}
	return nil
}

// replaceObject writes name, replacing what is there: only for objects of
// the run's own staging directory.
func replaceObject(ctx context.Context, b blob.Bucket, name string, data []byte) error {
	if err := b.Delete(ctx, name); err != nil {
		return err
	}
	if err := blob.WriteAll(ctx, b, name, data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

type lookbackEntry struct {
	once sync.Once
	ids  []*idSet
	err  error
}

// DropProcessCaches empties this process's caches of dataset event ids
// (env.written and env.lookback): the next publication reads its
// lookback hours from storage. For tests, and for a long-running process
// that wants the memory back.
func DropProcessCaches() {
	env.written.Purge()
	env.lookback.Purge()
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func writtenKey(root, name, sha string) string { return root + "\x00" + name + "\x00" + sha }

func rememberWritten(root, name, sha string, ids *idList) {
	env.written.Put(writtenKey(root, name, sha), ids)
}

func writtenFile(root, name, sha string) (*idList, bool) {
	if sha == "" {
		return nil, false
	}
	return env.written.Get(writtenKey(root, name, sha))
}

// lookbackIDs loads, once per process and file set, the event ids of the
// lookback dataset files, split by shard: from env.written for the files
// this process wrote with the checksums given (shas, aligned with files),
// else by reading them.
func lookbackIDs(ctx context.Context, b blob.Bucket, eventType string, version int, files, shas []string, shards int) ([]*idSet, error) {
	key := fmt.Sprint(b.Root(), eventType, version, shards, files, shas)
	e := env.lookback.GetOrPut(key, func() *lookbackEntry { return &lookbackEntry{} })
	e.once.Do(func() {
		e.ids = make([]*idSet, shards)
		for i := range e.ids {
			e.ids[i] = newIDSet()
		}
		var read []string
		for i, f := range files {
			sha := ""
			if i < len(shas) {
				sha = shas[i]
			}
			ids, ok := writtenFile(b.Root(), f, sha)
			if !ok {
				read = append(read, f)
				continue
			}
			ids.each(func(id []byte) { e.ids[shardOf(id, shards)].add(id) })
		}
		e.err = dataset.ReadRecords(ctx, b, eventType, version, read, func(cols []record.Column, lay *record.Layout, _ []byte) {
			id := cols[lay.Dedupe].Bytes
			e.ids[shardOf(id, shards)].add(id)
		})
	})
	return e.ids, e.err
}
