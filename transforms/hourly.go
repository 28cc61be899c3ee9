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
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"golang.org/x/sync/errgroup"

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
// byte-identical files. Up to DirectShards shards, one bundle reads every
// part file once and writes the shards (publishFn): no record crosses a
// shuffle. With more, the part is spread over workers: each part file is
// read once, its records grouped by shard (readPartsFn, then a GroupByKey
// into writeShardFn). The Avro sync marker is derived from the file's
// final name, never from the staging name, so the bytes do not depend on
// the run that wrote them.

func init() {
	register.DoFn3x1[context.Context, []byte, func(string), error](&publishFn{})
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
		return beam.ParDo(s, &publishFn{R: r, W: w, Parts: parts}, beam.Impulse(s)), nil
	}
	files := beam.CreateList(s, parts)
	keyed := beam.ParDo(s, &readPartsFn{R: r}, files)
	grouped := beam.GroupByKey(s, keyed)
	return beam.ParDo(s, &writeShardFn{W: w}, grouped), nil
}

// DirectShards is the most shards a publication writes from one bundle
// (publishFn): it reads each part file once and writes the shards side by
// side, on one worker. More shards are spread over workers by a shuffle of
// the records (readPartsFn, writeShardFn), for hours too big for one.
const DirectShards = 8

// publishFn publishes a part with at most DirectShards shards: it reads
// every part file once (files side by side, up to one per core), keeping
// each record in its shard's arena, then writes the shards side by side.
// No record crosses a shuffle: on prism, a shuffle copies every record's
// bytes several times over (the data channel, the runner's grouping and
// its buffers). Having each shard read every file instead (a bundle per
// shard) decoded every record once per shard: hourly's CPU was twice this.
type publishFn struct {
	R     partReader
	W     shardWriter
	Parts []string // the raw and late part files

	readers []fileReader // reused from bundle to bundle
}

// fileReader is one of publishFn's file-reading goroutines: its own
// decoding room, and the records it read by shard.
type fileReader struct {
	r      partReader
	arenas []shardArena
	stats  []ShardStats // Raw and Late
}

func (fn *publishFn) Setup(ctx context.Context) error {
	if err := fn.R.setup(ctx); err != nil {
		return err
	}
	return fn.W.setup(ctx, fn.R.bucket)
}

func (fn *publishFn) ProcessElement(ctx context.Context, _ []byte, emit func(string)) error {
	// A worker publishes one part at a time, on all its cores: the part's
	// records are all in memory until its files are written.
	select {
	case env.publishing <- struct{}{}:
		defer func() { <-env.publishing }()
	case <-ctx.Done():
		return ctx.Err()
	}
	shards := fn.R.Shards
	workers := max(1, min(runtime.GOMAXPROCS(0), len(fn.Parts)))
	for len(fn.readers) < workers {
		r := fn.R // with room of its own
		r.cols, r.files = make([]record.Column, len(fn.R.cols)), dataset.FileReader{}
		fn.readers = append(fn.readers, fileReader{r: r, arenas: make([]shardArena, shards), stats: make([]ShardStats, shards)})
	}
	defer func() {
		for i := range fn.readers {
			for sh := range fn.readers[i].arenas {
				fn.readers[i].arenas[sh].reset()
			}
			clear(fn.readers[i].stats)
		}
	}()
	// Each reader takes the next file no reader has taken.
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		rd := &fn.readers[w]
		g.Go(func() error {
			for i := int(next.Add(1)) - 1; i < len(fn.Parts); i = int(next.Add(1)) - 1 {
				_, err := rd.r.read(gctx, fn.Parts[i], func(sh int, r framed) {
					rd.arenas[sh].add(r)
					if r.late {
						rd.stats[sh].Late++
					} else {
						rd.stats[sh].Raw++
					}
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Every shard's records into the first reader's arenas.
	arenas, stats := fn.readers[0].arenas, fn.readers[0].stats
	for _, rd := range fn.readers[1:workers] {
		for sh := range shards {
			arenas[sh].absorb(&rd.arenas[sh])
			stats[sh].Raw += rd.stats[sh].Raw
			stats[sh].Late += rd.stats[sh].Late
		}
	}
	var raw, late int64
	for _, st := range stats {
		raw, late = raw+st.Raw, late+st.Late
	}
	countRead(ctx, false, raw)
	countRead(ctx, true, late)
	staged := make([]string, shards)
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for sh := range shards {
		g.Go(func() error {
			var err error
			staged[sh], stats[sh], err = fn.W.write(gctx, sh, &arenas[sh], stats[sh])
			arenas[sh].reset() // its records go as soon as its file is written
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Counted and emitted here, on the bundle's goroutine.
	for sh := range shards {
		countPublished(ctx, stats[sh])
		if staged[sh] != "" {
			emit(staged[sh])
		}
	}
	return nil
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

// shardArena holds the records of a shard: their bytes in chunks, and
// for each an arenaRec that holds no pointer, so that the collector never
// marks the hundreds of thousands of them a shard may hold (as []framed,
// two slices a record, it did on every cycle, and every append of them
// paid write barriers).
type shardArena struct {
	chunks [][]byte
	recs   []arenaRec
	size   int // bytes of the records (their ids not counted)
}

// arenaRec is one record of a shardArena: its publish time (8 bytes),
// event id and bytes, from off in chunk chunk. head and tail are the id's
// first 16 bytes (big-endian, zero-padded): sorting compares them before
// the ids themselves, which are spread over megabytes of records, so that
// ids sharing a prefix of up to 16 bytes ("ev-0455…", a producer's name
// and a date) are ordered without reading the arena.
type arenaRec struct {
	head, tail    uint64
	chunk, off    uint32
	idLen, recLen uint32
}

// idWords is the first 16 bytes of id as two big-endian numbers,
// zero-padded: two ids whose words differ compare as their words do.
func idWords(id []byte) (head, tail uint64) {
	var b [16]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// compare orders records by event id, then publish time, then bytes: the
// order a shard's file is written in.
func (a *shardArena) compare(x, y arenaRec) int {
	if x.head != y.head {
		return cmp.Compare(x.head, y.head)
	}
	if x.tail != y.tail {
		return cmp.Compare(x.tail, y.tail)
	}
	if x.idLen <= 16 && y.idLen <= 16 {
		// The padded words are equal: the shorter id is a prefix of the
		// longer (whose further bytes are zero), as bytes.Compare orders.
		if c := cmp.Compare(x.idLen, y.idLen); c != 0 {
			return c
		}
	} else if c := bytes.Compare(a.id(x), a.id(y)); c != 0 {
		return c
	}
	if c := cmp.Compare(a.pub(x), a.pub(y)); c != 0 {
		return c
	}
	return bytes.Compare(a.rec(x), a.rec(y))
}

// sameID reports whether x and y have the same event id, reading the
// arena only for ids longer than their words.
func (a *shardArena) sameID(x, y arenaRec) bool {
	if x.head != y.head || x.tail != y.tail || x.idLen != y.idLen {
		return false
	}
	return x.idLen <= 16 || bytes.Equal(a.id(x), a.id(y))
}

const arenaChunk = 4 << 20

// add copies r's publish time, event id and record into the arena.
func (a *shardArena) add(r framed) {
	size := 8 + len(r.id) + len(r.rec)
	n := len(a.chunks)
	if n == 0 || cap(a.chunks[n-1])-len(a.chunks[n-1]) < size {
		a.chunks = append(a.chunks, newChunk(size))
		n++
	}
	c := a.chunks[n-1]
	head, tail := idWords(r.id)
	a.recs = append(a.recs, arenaRec{head: head, tail: tail, chunk: uint32(n - 1), off: uint32(len(c)),
		idLen: uint32(len(r.id)), recLen: uint32(len(r.rec))})
	c = binary.LittleEndian.AppendUint64(c, uint64(r.pub))
	a.chunks[n-1] = append(append(c, r.id...), r.rec...)
	a.size += len(r.rec)
}

// pub, id and rec are the publish time, event id and bytes of a record
// of the arena.
func (a *shardArena) pub(r arenaRec) int64 {
	return int64(binary.LittleEndian.Uint64(a.chunks[r.chunk][r.off:]))
}

func (a *shardArena) id(r arenaRec) []byte {
	start := r.off + 8
	return a.chunks[r.chunk][start : start+r.idLen]
}

func (a *shardArena) rec(r arenaRec) []byte {
	start := r.off + 8 + r.idLen
	return a.chunks[r.chunk][start : start+r.recLen]
}

// absorb moves b's records into a (their bytes stay where they are: a
// takes b's chunks) and leaves b empty.
func (a *shardArena) absorb(b *shardArena) {
	base := uint32(len(a.chunks))
	a.chunks = append(a.chunks, b.chunks...)
	for _, r := range b.recs {
		r.chunk += base
		a.recs = append(a.recs, r)
	}
	a.size += b.size
	b.chunks, b.recs, b.size = nil, nil, 0
}

// reset empties the arena and lets go of its memory, its chunks back to
// the free list for the next part: nothing may hold a record of it any
// more. A DoFn instance lives as long as its job, one per publication of
// it: an arena that kept its room would keep it for the job's every hour.
func (a *shardArena) reset() {
	for _, c := range a.chunks {
		if cap(c) == arenaChunk {
			env.chunks.put(c)
		}
	}
	a.chunks, a.recs, a.size = nil, nil, 0
}

// newChunk returns an empty chunk with room for size bytes: a free one
// when arenaChunk is enough.
func newChunk(size int) []byte {
	if size > arenaChunk {
		return make([]byte, 0, size)
	}
	return env.chunks.get()
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
	files  dataset.FileReader // not to be shared by two goroutines
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
	err = r.files.ReadFile(ctx, r.bucket, name, r.lay, r.cols, func(cols []record.Column, lay *record.Layout, rec []byte) {
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
// and whether it came from the late area. id and rec alias the file block
// or the shard batch they were read from; a shard keeps them by copying
// them into its shardArena.
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
	var st ShardStats
	var batch []byte
	var a shardArena
	defer a.reset()
	for recs(&batch) {
		err := forEachFramed(batch, func(r framed) error {
			if r.late {
				st.Late++
			} else {
				st.Raw++
			}
			a.add(r)
			return nil
		})
		if err != nil {
			return fmt.Errorf("transforms.Publish: shard %d: %w", shard, err)
		}
	}
	staged, st, err := fn.W.write(ctx, shard, &a, st)
	if err != nil {
		return err
	}
	countPublished(ctx, st)
	if staged != "" {
		emit(staged)
	}
	return nil
}

// countPublished counts what a shard's writing dropped and published
// (Beam counters, for monitoring: the stats objects carry the accounting).
func countPublished(ctx context.Context, st ShardStats) {
	beam.NewCounter(MetricsNamespaceHourly, CountDuplicates).Inc(ctx, st.Duplicates)
	beam.NewCounter(MetricsNamespaceHourly, CountLookback).Inc(ctx, st.Lookback)
	beam.NewCounter(MetricsNamespaceHourly, CountPublished).Inc(ctx, st.Published)
}

// write dedupes the records of shard (those of a, read with the counts of
// st) against each other and the lookback, writes the shard's dataset file
// to the run's staging directory, then its stats object. It returns the
// file's staged name ("" when every record was dropped) and the shard's
// stats. It touches nothing of the bundle's but ctx (no counter, no
// emitter), so that several shards can be written side by side.
func (w *shardWriter) write(ctx context.Context, shard int, a *shardArena, st ShardStats) (string, ShardStats, error) {
	seen, err := lookbackIDs(ctx, w.bucket, w.Type, w.Version, w.Lookback, w.LookbackSHA256, w.Shards)
	if err != nil {
		return "", st, err
	}
	all := a.recs
	slices.SortFunc(all, a.compare)
	hour := time.UnixMilli(w.HourMillis).UTC()
	base := layout.ShardFile(shard, w.Shards)
	// The final name, not the staged one: the bytes are a function of the
	// input set and the file's place in the dataset, never of the run.
	final := layout.PartDir(w.Type, w.Version, hour, w.Part) + base
	staged := layout.StagingDir(w.RunID, w.Type, w.Version, hour, w.Part) + base
	// The staging directory is this run's alone: what is there is a
	// retried bundle's (or an earlier attempt of this run's), replaced.
	fw, err := createReplacing(ctx, w.bucket, staged)
	if err != nil {
		return "", st, fmt.Errorf("transforms.Publish: %w", err)
	}
	defer fw.Abort() // unless closed: no file when nothing is published
	// The file is written as it is encoded, and hashed on the way: the
	// part's records are in memory already, its files are not held there
	// too.
	hash := sha256.New()
	ow, err := record.NewOCFWriter(io.MultiWriter(fw, hash), w.schema.Encrypted().JSON, record.SyncMarker(final), FileCodec)
	if err != nil {
		return "", st, err
	}
	var dups, back, published int64
	kept := &idList{} // the event ids of the file
	for i, r := range all {
		id := a.id(r)
		if i > 0 && a.sameID(r, all[i-1]) {
			dups++
			continue
		}
		if seen[shard].has(id) {
			back++
			continue
		}
		if err := ow.Append(a.rec(r)); err != nil {
			return "", st, err
		}
		kept.add(id)
		published++
	}
	if err := ow.Close(); err != nil {
		return "", st, err
	}
	st.Shard, st.Duplicates, st.Lookback, st.Published = shard, dups, back, published
	if published > 0 {
		if err := fw.Close(); err != nil {
			return "", st, fmt.Errorf("transforms.Publish: %w", err)
		}
		st.File, st.SHA256 = base, hex.EncodeToString(hash.Sum(nil))
		rememberWritten(w.bucket.Root(), final, st.SHA256, kept)
	}
	// The accounting travels in a small stats object per shard, not in Beam
	// metrics: runner metrics are for monitoring (prism was seen to lose
	// counter updates of large bundles), the manifest must be exact. It is
	// written after the shard's file: a stats object means the shard is done.
	js, err := json.Marshal(st)
	if err != nil {
		return "", st, err
	}
	statsName := layout.StatsName(w.RunID, w.Type, w.Version, hour, w.Part, shard)
	if err := replaceObject(ctx, w.bucket, statsName, js); err != nil {
		return "", st, fmt.Errorf("transforms.Publish: %w", err)
	}
	if published == 0 {
		staged = ""
	}
	return staged, st, nil
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

// createReplacing creates name for writing, deleting what is there first:
// only for objects a run alone writes (its staging directory, a view's
// parts), where what is there is a retried bundle's earlier attempt.
func createReplacing(ctx context.Context, b blob.Bucket, name string) (blob.Writer, error) {
	if err := b.Delete(ctx, name); err != nil {
		return nil, err
	}
	return b.Create(ctx, name)
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
