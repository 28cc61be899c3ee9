package transforms

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/rootid"
	"github.com/lockstream/lockstream/schemas"
)

// batchWriter: a batch's anonymization, files and accounting.

// batchWriter is the write stage: it anonymizes a batch and writes its
// raw, late and dead-letter files. It is safe for concurrent use (the
// Pub/Sub streams write several batches at once).
type batchWriter struct {
	cfg    writeFnConfig
	bucket blob.Bucket
	reg    *schemas.Registry
	keys   *keyEnv
	runs   *runCounter             // the run's counters in this process (nil without a run id)
	anons  chan *record.Anonymizer // idle anonymizers (one goroutine each at a time)
	// cores has a slot per core, held by a slice while it anonymizes and
	// let go while its key lookup waits (yieldingKeys).
	cores  coreSlots
	closed *closedCache
	marks  completion.HourMarks
	rootID string
}

func newBatchWriter(ctx context.Context, cfg writeFnConfig) (*batchWriter, error) {
	w := &batchWriter{cfg: cfg, closed: &closedCache{hour: map[HourKey3]time.Time{}}}
	var err error
	if w.bucket, err = blob.Open(ctx, cfg.Root); err != nil {
		return nil, err
	}
	if w.reg, err = schemas.Embedded(); err != nil {
		return nil, err
	}
	if w.keys, err = keyEnvFor(ctx, cfg.KeysURL, cfg.KeyScope, cfg.KeyCacheSize); err != nil {
		return nil, err
	}
	w.runs = env.runCounter(cfg.Root, cfg.RunID)
	w.anons = make(chan *record.Anonymizer, 4*runtime.GOMAXPROCS(0))
	w.cores = newCoreSlots()
	// Dead letters of users no one can tell are sealed under a key of this
	// root and day, which retention shreds with them.
	if w.rootID, err = rootid.Get(ctx, w.bucket); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *batchWriter) anonymizer() (*record.Anonymizer, error) {
	select {
	case a := <-w.anons:
		return a, nil
	default:
		return record.NewAnonymizer(w.reg, yielding(w.keys.keys, w.cores), record.Options{MaxPayload: w.cfg.MaxPayload, Ciphers: w.keys.ciphers, DeadLetterScope: w.rootID})
	}
}

func (w *batchWriter) putAnonymizer(a *record.Anonymizer) {
	select {
	case w.anons <- a:
	default:
	}
}

// group is the output of one batch for one (type, version, hour).
type group struct {
	typ     string
	version int
	hour    time.Time
	recs    [][]byte
	late    bool
	dead    map[string]int64
	file    string // the raw or late file of recs, once written
}

type deadKey struct {
	reason string
	hour   time.Time
}

// writeResult is what writing one batch did.
type writeResult struct {
	files   []string // raw and late files written
	notices []Notice // per (type, version, hour) of the batch
	written int64    // records written to raw
	late    int64    // records written to late/
	dead    int64    // messages dead-lettered
	// counts are the batch's accounting counters (MetricsNamespace), by
	// name: report them from the DoFn's own goroutine (Beam's counters of
	// a bundle are not safe for concurrent use).
	counts map[string]int64
}

// report adds counts to the bundle's counters, with what the worker's key
// caches did since they were last reported. Call it from the goroutine
// that runs the DoFn's ProcessElement.
func (w *batchWriter) report(ctx context.Context, counts map[string]int64) {
	for name, n := range counts {
		beam.NewCounter(counterNamespace(name), name).Inc(ctx, n)
	}
	w.runs.add(counts)
	reportKeyActivity(ctx, w.runs, w.keys)
}

// write anonymizes a batch and writes its files; when it returns nil they
// are durable. redeliverable: the source can deliver the batch again
// (Pub/Sub), so a key-service outage holds it instead of dead-lettering it
// (write then retries until ctx ends), and files of the batch's name must
// not exist yet (batch ids of such sources are unique).
func (w *batchWriter) write(ctx context.Context, b *Batch, redeliverable bool) (writeResult, error) {
	outs, err := w.anonymize(ctx, b.Records(), redeliverable)
	if err != nil {
		return writeResult{}, err
	}
	return w.writeOutcomes(ctx, b, outs, redeliverable)
}

// writeOutcomes writes the files of batch b, whose messages were
// anonymized into outs, and accounts for them.
func (w *batchWriter) writeOutcomes(ctx context.Context, b *Batch, outs []record.Outcome, redeliverable bool) (writeResult, error) {
	var res writeResult
	groups := map[HourKey3]*group{}
	var order []HourKey3
	dead := map[deadKey][]*record.Rejection{}
	getGroup := func(typ string, v int, hour time.Time) (*group, error) {
		k := HourKey3{typ, v, hour.UnixMilli()}
		g := groups[k]
		if g == nil {
			late, err := w.closed.isClosed(ctx, w.bucket, typ, v, hour)
			if err != nil {
				return nil, err
			}
			g = &group{typ: typ, version: v, hour: hour, late: late}
			groups[k] = g
			order = append(order, k)
		}
		return g, nil
	}
	for i := range outs {
		o := &outs[i]
		if o.Reject != nil {
			dk := deadKey{o.Reject.Reason, o.Hour}
			dead[dk] = append(dead[dk], o.Reject)
			if o.EventType != "" && o.Version > 0 {
				g, err := getGroup(o.EventType, o.Version, o.Hour)
				if err != nil {
					return res, err
				}
				if g.dead == nil {
					g.dead = map[string]int64{}
				}
				g.dead[o.Reject.Reason]++
			}
			continue
		}
		g, err := getGroup(o.EventType, o.Version, o.Hour)
		if err != nil {
			return res, err
		}
		g.recs = append(g.recs, o.Record)
	}
	badHour := record.Hour(b.Time())
	for _, bl := range b.Bad {
		dk := deadKey{record.ReasonBadMessage, badHour}
		dead[dk] = append(dead[dk], &record.Rejection{
			Reason: record.ReasonBadMessage, Path: badLinePath(bl), Rule: bl.Cause,
			PublishTime: badHour,
		})
	}

	// Write every file of the batch.
	for _, k := range order {
		g := groups[k]
		if len(g.recs) == 0 {
			continue
		}
		s, err := w.reg.Lookup(g.typ, g.version)
		if err != nil {
			return res, fmt.Errorf("transforms: %s v%d: %w", g.typ, g.version, err)
		}
		name := RawPartName(g.typ, g.version, g.hour, b.ID)
		if g.late {
			name = LatePartName(g.typ, g.version, g.hour, b.ID)
		} else if err := w.marks.Mark(ctx, w.bucket, w.cfg.RunID, layout.Hour{Type: g.typ, Version: g.version, Hour: g.hour}); err != nil {
			return res, err
		}
		if err := writeOCF(ctx, w.bucket, name, s.Encrypted().JSON, g.recs, !redeliverable); err != nil {
			return res, err
		}
		g.file = name
		res.files = append(res.files, name)
	}
	deadKeys := make([]deadKey, 0, len(dead))
	for k := range dead {
		deadKeys = append(deadKeys, k)
	}
	sort.Slice(deadKeys, func(i, j int) bool {
		if deadKeys[i].reason != deadKeys[j].reason {
			return deadKeys[i].reason < deadKeys[j].reason
		}
		return deadKeys[i].hour.Before(deadKeys[j].hour)
	})
	for _, k := range deadKeys {
		if err := writeDeadLetters(ctx, w.bucket, DeadLetterName(k.reason, k.hour, b.ID), dead[k], !redeliverable); err != nil {
			return res, err
		}
	}

	res.counts = batchCounts(outs, len(b.Bad), badHour, groups, w.cfg.HourCounters)
	env.progress.messages.Add(int64(len(outs) + len(b.Bad)))
	for _, k := range order {
		g := groups[k]
		if g.late {
			res.late += int64(len(g.recs))
		} else {
			res.written += int64(len(g.recs))
		}
		res.notices = append(res.notices, Notice{Type: g.typ, Version: g.version, HourMillis: g.hour.UnixMilli(),
			Records: int64(len(g.recs)), Dead: g.dead, Late: g.late, File: g.file})
	}
	for _, rs := range dead {
		res.dead += int64(len(rs))
	}
	env.progress.written.Add(res.written)
	env.progress.late.Add(res.late)
	env.progress.dead.Add(res.dead)
	return res, nil
}

// HourKey3 identifies an (event type, version, hour) in maps.
type HourKey3 struct {
	Type       string
	Version    int
	HourMillis int64
}

// badLinePath locates a bad replay line: "file:line", or "file@byte" in a
// later byte range of a large file.
func badLinePath(bl BadLine) string {
	if bl.Line > 0 {
		return bl.File + ":" + strconv.FormatInt(bl.Line, 10)
	}
	return bl.File + "@" + strconv.FormatInt(bl.Offset, 10)
}
