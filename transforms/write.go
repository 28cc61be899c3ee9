package transforms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

func init() {
	register.DoFn4x1[context.Context, beam.EventTime, Batch, func(beam.EventTime, string, Notice), error](&writeFn{})
	register.Emitter3[beam.EventTime, string, Notice]()
}

// Metric namespace of the counters of the write stage. Counter names are
// "<kind>|<type>|<version>|<hour>" with kind one of in, written, late,
// dead:<reason>; type "" and version 0 for messages whose type is unknown.
const MetricsNamespace = "lockstream.ingest"

// Counter kinds.
const (
	CountIn      = "in"
	CountWritten = "written"
	CountLate    = "late"
	CountDead    = "dead:" // + reason
)

// CounterName builds a counter name of the write stage.
func CounterName(kind, eventType string, version int, hour time.Time) string {
	return kind + "|" + eventType + "|" + strconv.Itoa(version) + "|" + layout.FormatHour(hour)
}

// WriteConfig configures AnonymizeAndWrite.
type WriteConfig struct {
	Root       string // output root (blob.Open)
	KeysURL    string // see OpenKeys
	KeyScope   string // key-derivation scope; "" = DefaultKeyScope
	MaxPayload int    // bytes; 0 = record.DefaultMaxPayload
	// AllowedLateness: an event of hour H in a batch whose event time is at
	// or past H's end plus this is late (its hour may be closed).
	AllowedLateness time.Duration
	// KeyRetryBudget is how long key-service errors of one batch are retried
	// (jittered exponential backoff) before the batch is dead-lettered as
	// key_unavailable. 0 = DefaultKeyRetryBudget.
	KeyRetryBudget time.Duration
	// KeyCacheSize is how many users' keys, and how many built ciphers, a
	// worker keeps in memory (see DefaultKeyCacheSize, the default for 0).
	// Per process, the first key source and cipher cache opened keep their
	// size.
	KeyCacheSize int
}

// DefaultKeyRetryBudget is the default KeyRetryBudget.
const DefaultKeyRetryBudget = 30 * time.Second

func (c *WriteConfig) validate() error {
	if c.Root == "" {
		return errors.New("transforms.AnonymizeAndWrite: Root is empty")
	}
	if err := ValidateKeysURL(c.KeysURL); err != nil {
		return fmt.Errorf("transforms.AnonymizeAndWrite: %w", err)
	}
	if c.MaxPayload < 0 {
		return fmt.Errorf("transforms.AnonymizeAndWrite: MaxPayload %d < 0", c.MaxPayload)
	}
	if c.AllowedLateness < 0 {
		return fmt.Errorf("transforms.AnonymizeAndWrite: AllowedLateness %s < 0", c.AllowedLateness)
	}
	if c.KeyRetryBudget < 0 {
		return fmt.Errorf("transforms.AnonymizeAndWrite: KeyRetryBudget %s < 0", c.KeyRetryBudget)
	}
	if c.KeyCacheSize < 0 {
		return fmt.Errorf("transforms.AnonymizeAndWrite: KeyCacheSize %d < 0", c.KeyCacheSize)
	}
	return nil
}

// AnonymizeAndWrite anonymizes each batch (one key lookup), writes its raw,
// late and dead-letter files, acknowledges its Pub/Sub messages once all of
// them are durable, and returns the completion notices keyed by HourKey.
// Invalid configuration panics at construction.
func AnonymizeAndWrite(s beam.Scope, batches beam.PCollection, cfg WriteConfig) beam.PCollection {
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	if cfg.KeyRetryBudget == 0 {
		cfg.KeyRetryBudget = DefaultKeyRetryBudget
	}
	s = s.Scope("transforms.AnonymizeAndWrite")
	return beam.ParDo(s, &writeFn{
		Root: cfg.Root, KeysURL: cfg.KeysURL, KeyScope: cfg.KeyScope, MaxPayload: cfg.MaxPayload,
		AllowedLatenessMs: cfg.AllowedLateness.Milliseconds(), KeyRetryBudgetMs: cfg.KeyRetryBudget.Milliseconds(),
		KeyCacheSize: cfg.KeyCacheSize,
	}, batches)
}

// HourKey is the key of notices: "<type>|<version>|<hour>".
func HourKey(eventType string, version int, hour time.Time) string {
	return eventType + "|" + strconv.Itoa(version) + "|" + layout.FormatHour(hour)
}

type writeFn struct {
	Root              string
	KeysURL           string
	KeyScope          string
	MaxPayload        int
	AllowedLatenessMs int64
	KeyRetryBudgetMs  int64
	KeyCacheSize      int

	bucket  blob.Bucket
	reg     *schemas.Registry
	keys    keyclient.Keys
	ciphers *fieldcrypt.Cache
	anons   []*record.Anonymizer // one per core: a batch is anonymized in parallel slices
	closed  *closedCache
}

func (fn *writeFn) Setup(ctx context.Context) error {
	var err error
	if fn.bucket, err = blob.Open(ctx, fn.Root); err != nil {
		return err
	}
	if fn.reg, err = schemas.Embedded(); err != nil {
		return err
	}
	if fn.keys, err = OpenKeys(ctx, fn.KeysURL, fn.KeyScope, fn.KeyCacheSize); err != nil {
		return err
	}
	fn.ciphers = sharedCiphers(fn.KeyCacheSize)
	fn.anons = make([]*record.Anonymizer, runtime.GOMAXPROCS(0))
	for i := range fn.anons {
		if fn.anons[i], err = record.NewAnonymizer(fn.reg, fn.keys, record.Options{MaxPayload: fn.MaxPayload, Ciphers: fn.ciphers}); err != nil {
			return err
		}
	}
	fn.closed = closedHours(fn.Root)
	return nil
}

// group is the output of one batch for one (type, version, hour).
type group struct {
	typ     string
	version int
	hour    time.Time
	recs    [][]byte
	late    bool
	dead    map[string]int64
}

type deadKey struct {
	reason string
	hour   time.Time
}

func (fn *writeFn) ProcessElement(ctx context.Context, ts beam.EventTime, b Batch, emit func(beam.EventTime, string, Notice)) error {
	msgs := b.Records()
	var stopLease func()
	if len(b.AckIDs) > 0 {
		stopLease = keepLeases(ctx, b.Subscription, b.AckIDs)
		defer stopLease()
	}
	outs, err := fn.anonymize(ctx, msgs, len(b.AckIDs) > 0)
	if errors.Is(err, errHeld) {
		// Pub/Sub keeps the messages: hand them back unwritten and unacked
		// (deadline 0), to be redelivered once the key service is back.
		stopLease()
		if err := release(ctx, b.Subscription, b.AckIDs); err != nil {
			log.Warnf(ctx, "lockstream: release %d held messages on %s (they come back when their lease expires): %v", len(b.AckIDs), b.Subscription, err)
		}
		progress.held.Add(int64(len(b.AckIDs)))
		return nil
	}
	if err != nil {
		return err // context cancelled: the bundle fails, nothing is acked
	}

	groups := map[HourKey3]*group{}
	var order []HourKey3
	dead := map[deadKey][]*record.Rejection{}
	batchTime := ts.ToTime()
	lateness := time.Duration(fn.AllowedLatenessMs) * time.Millisecond
	getGroup := func(typ string, v int, hour time.Time) (*group, error) {
		k := HourKey3{typ, v, hour.UnixMilli()}
		g := groups[k]
		if g == nil {
			late := !batchTime.Before(hour.Add(time.Hour + lateness))
			if !late {
				var err error
				if late, err = fn.closed.isClosed(ctx, fn.bucket, typ, v, hour); err != nil {
					return nil, err
				}
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
					return err
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
			return err
		}
		g.recs = append(g.recs, o.Record)
	}
	badHour := record.Hour(batchTime)
	for _, bl := range b.Bad {
		dk := deadKey{record.ReasonBadMessage, badHour}
		dead[dk] = append(dead[dk], &record.Rejection{
			Reason: record.ReasonBadMessage, Path: badLinePath(bl), Rule: bl.Cause,
			PublishTime: badHour,
		})
	}

	// Write every file of the batch; only then acknowledge.
	for _, k := range order {
		g := groups[k]
		if len(g.recs) == 0 {
			continue
		}
		s, err := fn.reg.Lookup(g.typ, g.version)
		if err != nil {
			return fmt.Errorf("transforms: %s v%d: %w", g.typ, g.version, err)
		}
		name := RawPartName(g.typ, g.version, g.hour, b.ID)
		if g.late {
			name = LatePartName(g.typ, g.version, g.hour, b.ID)
		}
		if err := writeOCF(ctx, fn.bucket, name, s.Encrypted().JSON, g.recs); err != nil {
			return err
		}
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
		if err := writeDeadLetters(ctx, fn.bucket, DeadLetterName(k.reason, k.hour, b.ID), dead[k]); err != nil {
			return err
		}
	}
	if len(b.AckIDs) > 0 {
		if err := acknowledge(ctx, b.Subscription, b.AckIDs); err != nil {
			// The output is durable; only the ack failed. Pub/Sub redelivers
			// these messages, raw gets duplicates that hourly drops: nothing
			// is lost, so the run goes on.
			log.Warnf(ctx, "lockstream: %d messages written but not acknowledged (they will be redelivered and deduplicated): %v", len(b.AckIDs), err)
			progress.ackFailed.Add(int64(len(b.AckIDs)))
		} else {
			progress.acked.Add(int64(len(b.AckIDs)))
		}
	}

	// Account and notify. Counts are keyed by value; each counter's name is
	// formatted once per batch, not once per message.
	type counterKey struct {
		kind, reason string // reason: of CountDead
		hk           HourKey3
	}
	in := map[counterKey]int64{}
	for i := range outs {
		o := &outs[i]
		hk := HourKey3{o.EventType, o.Version, o.Hour.UnixMilli()}
		in[counterKey{CountIn, "", hk}]++
		switch {
		case o.Reject != nil:
			in[counterKey{CountDead, o.Reject.Reason, hk}]++
		case groups[hk].late:
			in[counterKey{CountLate, "", hk}]++
		default:
			in[counterKey{CountWritten, "", hk}]++
		}
	}
	if n := int64(len(b.Bad)); n > 0 {
		hk := HourKey3{"", 0, badHour.UnixMilli()}
		in[counterKey{CountIn, "", hk}] += n
		in[counterKey{CountDead, record.ReasonBadMessage, hk}] += n
	}
	for k, n := range in {
		name := CounterName(k.kind+k.reason, k.hk.Type, k.hk.Version, time.UnixMilli(k.hk.HourMillis).UTC())
		beam.NewCounter(MetricsNamespace, name).Inc(ctx, n)
	}
	reportKeyActivity(ctx, fn.keys, fn.ciphers)
	progress.messages.Add(int64(len(outs) + len(b.Bad)))
	for _, k := range order {
		g := groups[k]
		switch {
		case g.late:
			progress.late.Add(int64(len(g.recs)))
			continue // the hour is (or may be) closed: late files are counted from late/
		default:
			progress.written.Add(int64(len(g.recs)))
		}
		n := Notice{Type: g.typ, Version: g.version, HourMillis: g.hour.UnixMilli(), Records: int64(len(g.recs)), Dead: g.dead}
		if len(g.recs) > 0 {
			n.File = RawPartName(g.typ, g.version, g.hour, b.ID)
		}
		emit(ts, HourKey(g.typ, g.version, g.hour), n)
	}
	for _, rs := range dead {
		progress.dead.Add(int64(len(rs)))
	}
	return nil
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

// errHeld: a batch the source can redeliver was not written because the
// key service stayed unavailable for the whole retry budget.
var errHeld = errors.New("transforms: key service unavailable: batch held for redelivery")

// anonymize retries key-service errors with jittered exponential backoff
// within the budget. Then a batch the source can redeliver (Pub/Sub) is
// held (errHeld): nothing is written or lost, the messages come back; any
// other batch (replay files) is dead-lettered as key_unavailable, without
// payload (it cannot be sealed without a key): replay the file once the
// service is back, hourly drops what was already written.
func (fn *writeFn) anonymize(ctx context.Context, msgs []record.Message, redeliverable bool) ([]record.Outcome, error) {
	budget := time.Duration(fn.KeyRetryBudgetMs) * time.Millisecond
	deadline := time.Now().Add(budget)
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		outs, err := fn.anonymizeSlices(ctx, msgs)
		if err == nil {
			return outs, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !keyclient.IsTransient(err) {
			// Wrong secret, missing rights, unknown category: retrying cannot
			// help and dead-lettering every message would bury the cause.
			// Fail the bundle: nothing is written or acked, the run stops
			// with this error, and the input can be replayed once fixed.
			return nil, fmt.Errorf("lockstream: the key service refused a batch of %d messages (not retried): %w", len(msgs), err)
		}
		sleep := wait/2 + rand.N(wait/2+1)
		if time.Now().Add(sleep).After(deadline) && redeliverable {
			log.Warnf(ctx, "lockstream: key service unavailable for a batch of %d messages after %d attempts; holding them for redelivery: %v", len(msgs), attempt, err)
			return nil, errHeld
		}
		if time.Now().Add(sleep).After(deadline) {
			// The error text names no user (record's errors carry counts only).
			log.Warnf(ctx, "lockstream: key service unavailable for a batch of %d messages after %d attempts; dead-lettering them as %s: %v",
				len(msgs), attempt, record.ReasonKeyUnavailable, err)
			return record.KeyUnavailable(msgs), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(sleep):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// minSlice is the fewest messages worth a goroutine (and a key lookup) of
// their own.
const minSlice = 500

// anonymizeSlices anonymizes msgs in up to one slice per core, in parallel:
// prism may hand one bundle many batches while the other core idles, and
// Anonymize is most of a batch's CPU. Each slice makes its own (batched,
// cached) key lookup.
func (fn *writeFn) anonymizeSlices(ctx context.Context, msgs []record.Message) ([]record.Outcome, error) {
	n := min(len(fn.anons), len(msgs)/minSlice)
	if n <= 1 {
		return fn.anons[0].Anonymize(ctx, msgs)
	}
	outs := make([]record.Outcome, 0, len(msgs))
	parts := make([][]record.Outcome, n)
	g, gctx := errgroup.WithContext(ctx)
	for i := range n {
		lo, hi := i*len(msgs)/n, (i+1)*len(msgs)/n
		g.Go(func() error {
			var err error
			parts[i], err = fn.anons[i].Anonymize(gctx, msgs[lo:hi])
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, p := range parts {
		outs = append(outs, p...)
	}
	return outs, nil
}

// FileCodec is the block codec of the raw and dataset files lockstream
// writes (see record.CodecSnappy for the measurement behind it).
const FileCodec = record.CodecSnappy

// writeOCF writes one OCF file of pre-encoded records. A file of that name
// that exists already was written by an earlier attempt of the same batch
// (names carry the batch id; Create is atomic), so it counts as written.
func writeOCF(ctx context.Context, b blob.Bucket, name string, schemaJSON []byte, recs [][]byte) error {
	w, err := b.Create(ctx, name)
	if errors.Is(err, blob.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transforms: create %s: %w", name, err)
	}
	ocf, err := record.NewOCFWriter(w, schemaJSON, record.SyncMarker(name), FileCodec)
	if err != nil {
		w.Abort()
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	for _, r := range recs {
		if err := ocf.Append(r); err != nil {
			w.Abort()
			return fmt.Errorf("transforms: %s: %w", name, err)
		}
	}
	if err := ocf.Close(); err != nil {
		w.Abort()
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	if err := w.Close(); err != nil && !errors.Is(err, blob.ErrExist) {
		return fmt.Errorf("transforms: close %s: %w", name, err)
	}
	return nil
}

// writeDeadLetters writes rejections as NDJSON (record.Rejection holds no
// plaintext: payloads are sealed).
func writeDeadLetters(ctx context.Context, b blob.Bucket, name string, rs []*record.Rejection) error {
	var buf []byte
	for _, r := range rs {
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("transforms: %s: %w", name, err)
		}
		buf = append(append(buf, line...), '\n')
	}
	err := blob.WriteAll(ctx, b, name, buf)
	if err != nil && !errors.Is(err, blob.ErrExist) {
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	return nil
}

// closedCache remembers which hours have a _COMPLETE marker: a closed hour
// stays closed; an open one is re-checked after a minute.
type closedCache struct {
	mu   sync.Mutex
	hour map[HourKey3]time.Time // zero time: closed; else: open as of then
}

var closedCaches sync.Map // root -> *closedCache

func closedHours(root string) *closedCache {
	c, _ := closedCaches.LoadOrStore(root, &closedCache{hour: map[HourKey3]time.Time{}})
	return c.(*closedCache)
}

const openRecheck = time.Minute

func (c *closedCache) isClosed(ctx context.Context, b blob.Bucket, typ string, v int, hour time.Time) (bool, error) {
	k := HourKey3{typ, v, hour.UnixMilli()}
	c.mu.Lock()
	t, ok := c.hour[k]
	c.mu.Unlock()
	if ok && (t.IsZero() || time.Since(t) < openRecheck) {
		return t.IsZero(), nil
	}
	closed, err := b.Exists(ctx, CompleteName(typ, v, hour))
	if err != nil {
		return false, fmt.Errorf("transforms: %w", err)
	}
	c.mu.Lock()
	if closed {
		c.hour[k] = time.Time{}
	} else {
		c.hour[k] = time.Now()
	}
	c.mu.Unlock()
	return closed, nil
}

// markClosed records a marker this process wrote.
func (c *closedCache) markClosed(typ string, v int, hour time.Time) {
	c.mu.Lock()
	c.hour[HourKey3{typ, v, hour.UnixMilli()}] = time.Time{}
	c.mu.Unlock()
}
