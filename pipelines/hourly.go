package pipelines

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

// HourlyConfig configures Hourly: the publication of one (type, version,
// hour): its main part, or, once that is published, a late supplement.
type HourlyConfig struct {
	Root    string
	Type    string
	Version int
	Hour    time.Time
	// Force publishes the main part of an hour that is not complete (no
	// completion decision), and marks the hour complete (a forced
	// _COMPLETE): later raw data of it goes to a supplement.
	Force bool
	// Lookback: drop event ids published in the neighbouring hours within
	// this, before and after the hour (default 1h; 0 = default, <0 = none).
	Lookback time.Duration
	Shards   int       // dataset files of a part (default DefaultShards)
	KeyScope string    // recorded in the manifest's lineage ("" = transforms.DefaultKeyScope)
	Log      io.Writer // progress lines; nil = silent
	// RunID names this run in publication leases, staging names, completion
	// markers it writes and manifests ("" = a random id; HourlyMany gives
	// every entry without one the same). [A-Za-z0-9_], at most 64.
	RunID string
	// Clock is the time of leases, completion decisions and manifests
	// (zero: the system clock).
	Clock clock.Clock
	// LeaseTTL is how long the publication lease lasts without renewal (0 =
	// dataset.DefaultLeaseTTL); it is renewed every TTL/4 while the run works.
	LeaseTTL time.Duration
	// Hooks are for tests only.
	Hooks *HourlyHooks
}

// HourlyHooks let tests stop a publication at chosen points. For tests
// only: production code leaves HourlyConfig.Hooks nil.
type HourlyHooks struct {
	// BeforeManifest is called once a part's files are in place, before
	// the lease is re-checked and _MANIFEST.json written, with the lease's
	// renewal stopped as if the process were paused there: a hook that
	// returns after the lease expired makes the publication fail with
	// dataset.ErrLeaseLost, and publish nothing more.
	BeforeManifest func(h layout.Hour)
}

// DefaultShards is the default number of dataset files of an hour.
const DefaultShards = 4

// Publication states of an hour.
const (
	StatePublished           = "published"  // the main part
	StatePublishedSupplement = "supplement" // a late supplement (HourlyResult.Part)
	StateAlreadyPublished    = "already-published"
)

// ErrNotReady is returned when an hour is not complete (and Force is off):
// the scheduler should try again later. The error is a *NotReadyError,
// which says why.
var ErrNotReady = errors.New("pipelines: hour not complete yet")

// NotReadyError is ErrNotReady with the completion decision.
type NotReadyError struct{ Decision completion.Decision }

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.Decision.Hour, ErrNotReady, e.Decision.Reason)
}

func (e *NotReadyError) Unwrap() error { return ErrNotReady }

// ErrLeaseHeld is the outcome of an hour another run is publishing (its
// lease is live): not a failure, the hour is that run's. The error is a
// *dataset.HeldError, which says who holds it and until when.
var ErrLeaseHeld = dataset.ErrLeaseHeld

// HourlyResult is the outcome of one publication.
type HourlyResult struct {
	Hour  layout.Hour
	State string
	// Part is the part published (layout.MainPart or "late-000n"); for
	// StateAlreadyPublished, the main part.
	Part     string
	Manifest layout.ManifestDoc
	// Leftovers counts the objects of an unfinished earlier attempt found
	// in the part's directory; Removed those of them deleted (a file with
	// the bytes this run staged for its name is kept).
	Leftovers, Removed int
	Elapsed            time.Duration
}

// NewRunID returns a random run id: the UTC time and 12 hex digits.
func NewRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "_" + hex.EncodeToString(b[:])
}

func (c *HourlyConfig) normalize() error {
	if c.Root == "" || c.Type == "" || c.Version < 1 || c.Hour.IsZero() {
		return fmt.Errorf("%w: hourly needs a root, a type, a version and an hour", ErrConfig)
	}
	c.Hour = c.Hour.UTC()
	if !c.Hour.Equal(c.Hour.Truncate(time.Hour)) {
		return fmt.Errorf("%w: %s is not the start of an hour", ErrConfig, c.Hour)
	}
	if c.Lookback == 0 {
		c.Lookback = time.Hour
	}
	if c.KeyScope == "" {
		c.KeyScope = transforms.DefaultKeyScope
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.RunID == "" {
		c.RunID = NewRunID()
	}
	if c.LeaseTTL < 0 {
		return fmt.Errorf("%w: lease TTL %s < 0", ErrConfig, c.LeaseTTL)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		return err
	}
	if _, err := reg.Lookup(c.Type, c.Version); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	// The transform's own checks (shards, run id), before anything is read.
	pc := transforms.PublishConfig{Root: c.Root, Type: c.Type, Version: c.Version, Hour: c.Hour, RunID: c.RunID, Part: layout.MainPart, Shards: c.Shards}
	if err := pc.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}

// Hourly publishes one (type, version, hour), under its publication lease
// (dataset.AcquireLease; a live lease of another run: ErrLeaseHeld).
//
// An hour whose main part is not published must be complete (the
// completion rule decides and marks it; otherwise ErrNotReady) unless
// Force: its main part is every raw and late part file of the hour. A
// published hour gets a late supplement (late-0001, late-0002, …) of the
// part files no part consumed yet, if there are any; otherwise nothing is
// done (StateAlreadyPublished). Either way records are deduplicated by
// event id, and event ids already published within Lookback (before and
// after the hour; for a supplement also in the hour's earlier parts) are
// dropped. The files are staged under the run's own staging directory,
// copied to their final names, read back into _MANIFEST.json, and last
// _SUCCESS is written; the lease is re-checked before each of those two.
func Hourly(ctx context.Context, cfg HourlyConfig) (*HourlyResult, error) {
	out := HourlyMany(ctx, []HourlyConfig{cfg})
	return out[0].Result, out[0].Err
}

// HourlyOutcome is the result of one HourlyMany entry.
type HourlyOutcome struct {
	Result *HourlyResult // nil when Err is set
	Err    error
}

// HourlyMany is Hourly for several (type, version, hour)s: the parts of one
// hour (main parts and supplements alike) are published by one Beam job (a
// job costs far more to start than a small hour costs to run), hours go in
// time order, since an hour's dedupe reads the published hours before it.
// The i-th outcome belongs to cfgs[i]; an entry that fails (not ready,
// lease held, bad configuration) does not stop the others — a caller that
// goes on to later hours of that (type, version) should not, as their
// lookback would miss it — but a failed Beam job fails every entry it
// carried. Entries without a RunID share one.
func HourlyMany(ctx context.Context, cfgs []HourlyConfig) []HourlyOutcome {
	out := make([]HourlyOutcome, len(cfgs))
	cfgs = slices.Clone(cfgs)
	runID := NewRunID()
	byHour := map[time.Time][]int{}
	var hours []time.Time
	for i := range cfgs {
		if cfgs[i].RunID == "" {
			cfgs[i].RunID = runID
		}
		h := cfgs[i].Hour.UTC()
		if _, ok := byHour[h]; !ok {
			hours = append(hours, h)
		}
		byHour[h] = append(byHour[h], i)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].Before(hours[j]) })
	for _, hr := range hours {
		var jobs []*hourJob
		var at []int
		for _, i := range byHour[hr] {
			j, err := prepareHour(ctx, cfgs[i])
			switch {
			case err != nil:
				out[i].Err = err
			case j.res.State == StateAlreadyPublished:
				j.close(ctx)
				out[i].Result = j.res
			default:
				jobs, at = append(jobs, j), append(at, i)
			}
		}
		jobErr := runHourJobs(ctx, jobs)
		for k, j := range jobs {
			err := jobErr
			if err == nil {
				err = j.finish(ctx)
			}
			if err != nil {
				out[at[k]].Err = err
			} else {
				out[at[k]].Result = j.res
			}
			j.close(ctx)
		}
	}
	return out
}

// hourJob is one part of an hour being published: what prepareHour found.
type hourJob struct {
	cfg   HourlyConfig
	b     blob.Bucket
	res   *HourlyResult
	hour  layout.Hour
	part  string
	parts []string // raw and late part files consumed
	// dedupe are the published dataset files whose event ids the part must
	// not repeat, with their checksums (manifests).
	dedupe, dedupeSHA []string
	inputHours        []string
	lease             *dataset.Lease
	stopKeepAlive     func()
	start             time.Time
}

// prepareHour decides what to publish of an hour (nothing, its main part or
// a supplement), takes its lease, and lists the inputs and the files to
// dedupe against. A job it returns holds the lease until close.
func prepareHour(ctx context.Context, cfg HourlyConfig) (*hourJob, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	h := layout.Hour{Type: cfg.Type, Version: cfg.Version, Hour: cfg.Hour}
	j := &hourJob{cfg: cfg, hour: h, start: time.Now(), res: &HourlyResult{Hour: h}}
	b, err := blob.Open(ctx, cfg.Root)
	if err != nil {
		return nil, err
	}
	j.b = b
	// A first look without the lease: a published hour with nothing
	// pending needs none (a scheduler's --since passes over many), and an
	// hour that is not complete does not take one.
	cur, err := dataset.Read(ctx, b, h)
	if err != nil {
		return nil, err
	}
	if cur.Published() {
		pending, err := dataset.Pending(ctx, b, cur)
		if err != nil {
			return nil, err
		}
		if len(pending) == 0 {
			j.alreadyPublished(cur)
			return j, nil
		}
	} else if !cfg.Force {
		if err := checkComplete(ctx, b, cfg, h); err != nil {
			return nil, err
		}
	}
	if !IsDryRun() { // a dry run changes nothing: no lease either
		j.lease, err = dataset.AcquireLease(ctx, b, h, cfg.RunID, cfg.LeaseTTL, cfg.Clock)
		if err != nil {
			return nil, err
		}
		j.stopKeepAlive = j.lease.KeepAlive(ctx)
	}
	if err := j.plan(ctx); err != nil {
		j.close(ctx)
		return nil, err
	}
	return j, nil
}

// checkComplete applies the completion rule to h (marking it complete if
// it is): ErrNotReady, as a *NotReadyError, when it is not. A dry run only
// decides.
func checkComplete(ctx context.Context, b blob.Bucket, cfg HourlyConfig, h layout.Hour) error {
	var d completion.Decision
	if IsDryRun() {
		marked, err := completion.IsComplete(ctx, b, h)
		if err != nil || marked {
			return err
		}
		recs, err := completion.Load(ctx, b)
		if err != nil {
			return err
		}
		d = completion.Decide(h, recs, cfg.Clock.Now())
	} else {
		obs := completion.Observer{Bucket: b, Name: "hourly " + cfg.RunID, Now: cfg.Clock.Now}
		ds, err := obs.Observe(ctx, []layout.Hour{h})
		if err != nil {
			return err
		}
		d = ds[0]
	}
	if !d.Complete {
		return &NotReadyError{Decision: d}
	}
	return nil
}

func (j *hourJob) alreadyPublished(cur *dataset.Hour) {
	j.res.State, j.res.Part, j.res.Manifest = StateAlreadyPublished, layout.MainPart, *cur.Parts[0].Manifest
}

// plan reads the hour again, now under the lease, and decides the part,
// its inputs and the files it is deduplicated against.
func (j *hourJob) plan(ctx context.Context) error {
	cfg, b, h := j.cfg, j.b, j.hour
	cur, err := dataset.Read(ctx, b, h)
	if err != nil {
		return err
	}
	j.inputHours = []string{layout.FormatHour(h.Hour)}
	if !cur.Published() {
		j.part = layout.MainPart
		if cfg.Force && !IsDryRun() {
			// Forced: the hour is closed from now on, so ingest sends what
			// still comes for it to late/ (a supplement), not to raw/.
			if err := completion.WriteMarker(ctx, b, h, completion.Decision{Hour: h}, "hourly "+cfg.RunID, cfg.Clock.Now(), true); err != nil {
				return err
			}
		}
		if j.parts, err = dataset.InputParts(ctx, b, h); err != nil {
			return err
		}
	} else {
		if j.parts, err = dataset.Pending(ctx, b, cur); err != nil {
			return err
		}
		if len(j.parts) == 0 { // published meanwhile, by the run that held the lease
			j.alreadyPublished(cur)
			return nil
		}
		last := 0
		for _, p := range cur.Parts {
			if n, ok := layout.ParseSupplementPart(p.Name); ok && n > last {
				last = n
			}
		}
		// The next number: an unfinished attempt's directory (no _SUCCESS)
		// of that number is reused, its leftovers replaced.
		j.part = layout.SupplementPart(last + 1)
		j.addDedupe(cur)
	}
	neighbours, err := dataset.Neighbours(ctx, b, h, cfg.Lookback, true)
	if err != nil {
		return err
	}
	for _, n := range neighbours {
		j.addDedupe(n)
		j.inputHours = append(j.inputHours, layout.FormatHour(n.Hour.Hour))
	}
	j.res.Part = j.part
	if IsDryRun() {
		return nil
	}
	// The staging directory of this run and part: what is there is an
	// earlier attempt of this run's, which nothing else reads.
	return deleteAll(ctx, b, j.staging())
}

func (j *hourJob) addDedupe(h *dataset.Hour) {
	for _, f := range h.Files() {
		j.dedupe = append(j.dedupe, f.Name)
		j.dedupeSHA = append(j.dedupeSHA, f.SHA256)
	}
}

func (j *hourJob) staging() string {
	return layout.StagingDir(j.cfg.RunID, j.hour.Type, j.hour.Version, j.hour.Hour, j.part)
}

func (j *hourJob) partDir() string {
	return layout.PartDir(j.hour.Type, j.hour.Version, j.hour.Hour, j.part)
}

// close stops renewing the lease, removes the run's staging objects of the
// part and releases the lease (also after a failure).
func (j *hourJob) close(ctx context.Context) {
	if j.stopKeepAlive != nil {
		j.stopKeepAlive()
		j.stopKeepAlive = nil
	}
	if j.lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if j.part != "" {
		if err := deleteAll(ctx, j.b, j.staging()); err != nil {
			j.logf("hourly %s: staging objects left in %s: %v", j.hour, j.staging(), err)
		}
	}
	if err := j.lease.Release(ctx); err != nil {
		j.logf("hourly %s: release lease: %v (it expires by itself)", j.hour, err)
	}
	j.lease = nil
}

func (j *hourJob) logf(format string, a ...any) {
	if j.cfg.Log != nil {
		fmt.Fprintf(j.cfg.Log, format+"\n", a...)
	}
}

func deleteAll(ctx context.Context, b blob.Bucket, prefix string) error {
	names, err := b.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := b.Delete(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// runHourJobs runs the Publish transforms of jobs (those with input) as one
// Beam job.
func runHourJobs(ctx context.Context, jobs []*hourJob) error {
	p, s := beam.NewPipelineWithRoot()
	var names []string
	for _, j := range jobs {
		if len(j.parts) == 0 {
			continue
		}
		cfg := j.cfg
		files, err := transforms.Publish(s, transforms.PublishConfig{Root: cfg.Root, Type: cfg.Type, Version: cfg.Version,
			Hour: cfg.Hour, RunID: cfg.RunID, Part: j.part, Shards: cfg.Shards, Lookback: j.dedupe, LookbackSHA256: j.dedupeSHA}, j.parts)
		if err != nil {
			return err
		}
		transforms.EndBranch(s, files)
		names = append(names, j.res.Hour.String()+" "+j.part)
	}
	if len(names) == 0 {
		if len(jobs) > 0 && IsDryRun() {
			return ErrDryRun // nothing to run, and nothing to publish either
		}
		return nil
	}
	if _, err := run(ctx, p); err != nil {
		if errors.Is(err, ErrDryRun) {
			return err
		}
		return fmt.Errorf("pipelines: hourly %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// finish publishes a part whose Publish ran: it copies the staged files to
// their final names, removes what else an unfinished attempt left in the
// part's directory, reads every file back into the manifest, and writes
// _MANIFEST.json then _SUCCESS, re-checking the lease before each step.
func (j *hourJob) finish(ctx context.Context) error {
	cfg, b, h := j.cfg, j.b, j.hour
	acc := layout.Accounting{RawFiles: len(j.parts)}
	written := map[string]transforms.ShardStats{}
	if len(j.parts) > 0 {
		var err error
		if written, err = shardAccounting(ctx, b, cfg, j.part, &acc); err != nil {
			return err
		}
	}
	if err := j.lease.Check(ctx); err != nil {
		return fmt.Errorf("pipelines: hourly %s %s: %w", h, j.part, err)
	}
	if err := j.placeFiles(ctx, written); err != nil {
		return err
	}
	m, err := buildManifest(ctx, b, cfg, j.part, acc, j.inputHours, written)
	if err != nil {
		return err
	}
	if m.Records != acc.Published {
		return fmt.Errorf("pipelines: hourly %s %s: files hold %d records, the pipeline published %d", h, j.part, m.Records, acc.Published)
	}
	m.Parts, m.RunID, m.PublishedAt = j.parts, cfg.RunID, cfg.Clock.Now().UTC()
	if hk := cfg.Hooks; hk != nil && hk.BeforeManifest != nil {
		j.stopKeepAlive() // as if the whole process paused here
		hk.BeforeManifest(h)
		j.stopKeepAlive = j.lease.KeepAlive(ctx)
	}
	if err := dataset.PublishPart(ctx, b, j.lease, j.partDir(), m); err != nil {
		return fmt.Errorf("pipelines: hourly %s %s: %w", h, j.part, err)
	}
	j.res.State = StatePublished
	if j.part != layout.MainPart {
		j.res.State = StatePublishedSupplement
	}
	j.res.Manifest, j.res.Elapsed = *m, time.Since(j.start)
	return nil
}
