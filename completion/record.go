package completion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// Writer kinds.
const (
	KindStream  = "stream"  // a Pub/Sub pull stream: unbounded
	KindBounded = "bounded" // a replay run: reads what it was given, then ends
)

// Writer states.
const (
	StateRunning  = "running"
	StateStopped  = "stopped"  // planned stop (SIGTERM, --stop-after): hours past the watermark stay open
	StateDrained  = "drained"  // drain (--idle-timeout): the hours it wrote may complete
	StateFinished = "finished" // a bounded run read all its input
	StateFailed   = "failed"   // the run failed; like a crash, it holds nothing
)

// RecordFormatVersion is the version of the Record JSON.
const RecordFormatVersion = 1

// DefaultStaleAfter is how long after its last heartbeat a running writer
// counts as dead. It must exceed the time a stream waits between two of
// its sessions and a Pub/Sub lease (a dead writer's messages are
// redelivered within one lease).
const DefaultStaleAfter = 2 * time.Minute

// Record is what one writer records under the root.
type Record struct {
	FormatVersion int    `json:"format_version"`
	RunID         string `json:"run_id"`
	Part          string `json:"part"`
	Kind          string `json:"kind"`
	Source        string `json:"source"` // the subscription, or "replay"
	State         string `json:"state"`
	Note          string `json:"note,omitempty"` // why it stopped
	// Lateness is added to an hour's end before the writer counts as past
	// it; StaleAfter is how old its heartbeat may get while it runs.
	Lateness    Duration  `json:"lateness"`
	StaleAfter  Duration  `json:"stale_after"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	// Watermark: the writer writes no raw data of an hour that ends at
	// or before Watermark-Lateness (nil: none yet, it holds every hour).
	Watermark *time.Time `json:"watermark,omitempty"`
	// Pulled and Written count messages since the writer started.
	Pulled  int64 `json:"pulled,omitempty"`
	Written int64 `json:"written,omitempty"`

	// Hours the writer wrote raw data to (from its hour markers; not
	// stored in the record).
	Hours []layout.Hour `json:"-"`
	// Name is the record's object name; Generation its generation when read.
	Name       string `json:"-"`
	Generation int64  `json:"-"`
}

// ID names the writer: "<run>/<part>".
func (r *Record) ID() string { return r.RunID + "/" + r.Part }

// Live reports whether the writer is running with a fresh heartbeat.
func (r *Record) Live(now time.Time) bool {
	stale := r.StaleAfter.D()
	if stale <= 0 {
		stale = DefaultStaleAfter
	}
	return r.State == StateRunning && now.Sub(r.HeartbeatAt) <= stale
}

// Ended reports whether the writer ended having written all it will write
// (drained or finished).
func (r *Record) Ended() bool { return r.State == StateDrained || r.State == StateFinished }

// Passed reports whether the writer's watermark passed hour h (its end
// plus the writer's lateness).
func (r *Record) Passed(h time.Time) bool {
	return r.Watermark != nil && !r.Watermark.Before(h.Add(time.Hour+r.Lateness.D()))
}

// Wrote reports whether the writer wrote raw data of h.
func (r *Record) Wrote(h layout.Hour) bool {
	for _, w := range r.Hours {
		if w.Type == h.Type && w.Version == h.Version && w.Hour.Equal(h.Hour) {
			return true
		}
	}
	return false
}

// Duration is a time.Duration that reads and writes as "2m0s" in JSON.
type Duration time.Duration

// D is the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// ErrRunIDUsed is returned by Claim when a run id was used before.
var ErrRunIDUsed = errors.New("completion: run id was used before")

// RunInfo is writers/<run>/run.json: what a run is, written once when it
// claims its id.
type RunInfo struct {
	RunID     string    `json:"run_id"`
	Source    string    `json:"source"` // the subscription, or "replay"
	StartedAt time.Time `json:"started_at"`
	Host      string    `json:"host,omitempty"`
}

// runInfoName is the object of a run's RunInfo (not a writer record).
const runInfoName = "run.json"

// Claim makes a run id this run's: it fails with ErrRunIDUsed if any
// object of the run exists under the root (files named after a reused run
// id would be taken for an earlier attempt's, and the messages of a batch
// acknowledged unwritten), and otherwise creates writers/<run>/run.json
// atomically.
func Claim(ctx context.Context, b blob.Bucket, info RunInfo) error {
	names, err := b.List(ctx, layout.WriterDir(info.RunID))
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("%w: %s exists (give a new run id, or none for a random one)", ErrRunIDUsed, layout.WriterDir(info.RunID))
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	err = blob.WriteAll(ctx, b, layout.WriterDir(info.RunID)+runInfoName, append(data, '\n'))
	if errors.Is(err, blob.ErrExist) {
		return fmt.Errorf("%w: %s was created meanwhile", ErrRunIDUsed, layout.WriterDir(info.RunID))
	}
	return err
}

// Write stores rec as the writer's record: it creates it (rec.Generation
// 0) or replaces the generation rec was read or last written at, and sets
// rec.Generation. Another process that wrote the record meanwhile (a zombie
// worker of the same stream) makes it fail with blob.ErrPrecondition.
func Write(ctx context.Context, b blob.Bucket, rec *Record) error {
	rec.FormatVersion = RecordFormatVersion
	if rec.Name == "" {
		rec.Name = layout.WriterRecord(rec.RunID, rec.Part)
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	gen, err := b.WriteVersion(ctx, rec.Name, append(data, '\n'), rec.Generation)
	if err != nil {
		return err
	}
	rec.Generation = gen
	return nil
}

// HourMarks remembers which hour markers a writer has created, so that it
// creates each once. Safe for concurrent use.
type HourMarks struct {
	mu   sync.Mutex
	done map[layout.Hour]bool
}

// Mark creates the writer's marker of hour h unless it did already.
func (m *HourMarks) Mark(ctx context.Context, b blob.Bucket, runID string, h layout.Hour) error {
	h.Hour = h.Hour.UTC()
	m.mu.Lock()
	done := m.done[h]
	m.mu.Unlock()
	if done {
		return nil
	}
	err := blob.WriteAll(ctx, b, layout.WriterHourMarker(runID, h.Type, h.Version, h.Hour), nil)
	if err != nil && !errors.Is(err, blob.ErrExist) {
		return fmt.Errorf("completion: mark %s written by %s: %w", h, runID, err)
	}
	m.mu.Lock()
	if m.done == nil {
		m.done = map[layout.Hour]bool{}
	}
	m.done[h] = true
	m.mu.Unlock()
	return nil
}

// Load reads every writer record under the root with the hours each wrote.
func Load(ctx context.Context, b blob.Bucket) ([]*Record, error) {
	names, err := b.List(ctx, layout.WritersArea+"/")
	if err != nil {
		return nil, err
	}
	hours := map[string][]layout.Hour{}
	var recNames []string
	for _, n := range names {
		if run, h, ok := layout.ParseWriterHourMarker(n); ok {
			hours[run] = append(hours[run], h)
			continue
		}
		p := strings.Split(n, "/")
		if len(p) == 3 && strings.HasSuffix(p[2], ".json") && p[2] != runInfoName {
			recNames = append(recNames, n)
		}
	}
	recs := make([]*Record, len(recNames))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, n := range recNames {
		g.Go(func() error {
			data, gen, err := b.ReadVersion(gctx, n)
			if errors.Is(err, blob.ErrNotExist) {
				return nil // pruned meanwhile
			}
			if err != nil {
				return err
			}
			var r Record
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("completion: %s: %w", n, err)
			}
			r.Name, r.Generation = n, gen
			recs[i] = &r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if r == nil {
			continue
		}
		r.Hours = hours[r.RunID]
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out, nil
}

// DefaultKeepRecords is how long the records of a run that ended (or died)
// are kept once every hour it wrote is complete.
const DefaultKeepRecords = 7 * 24 * time.Hour

// Prune deletes the records and hour markers of runs whose every writer
// ended or went stale more than keep before now and whose every hour is
// complete: they can no longer hold or decide anything. It returns the
// runs removed.
func Prune(ctx context.Context, b blob.Bucket, now time.Time, keep time.Duration) ([]string, error) {
	names, err := b.List(ctx, layout.WritersArea+"/")
	if err != nil {
		return nil, err
	}
	recs, err := Load(ctx, b)
	if err != nil {
		return nil, err
	}
	byRun := map[string][]*Record{}
	for _, r := range recs {
		byRun[r.RunID] = append(byRun[r.RunID], r)
	}
	objs := map[string][]string{}
	for _, n := range names {
		p := strings.SplitN(n, "/", 3)
		if len(p) == 3 {
			objs[p[1]] = append(objs[p[1]], n)
		}
	}
	var removed []string
	for run, rs := range byRun {
		old := true
		for _, r := range rs {
			if r.Live(now) || now.Sub(r.HeartbeatAt) < keep {
				old = false
			}
		}
		if !old {
			continue
		}
		complete := true
		for _, h := range rs[0].Hours {
			if ok, err := IsComplete(ctx, b, h); err != nil {
				return removed, err
			} else if !ok {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		for _, n := range objs[run] {
			if err := b.Delete(ctx, n); err != nil {
				return removed, err
			}
		}
		removed = append(removed, run)
	}
	sort.Strings(removed)
	return removed, nil
}
