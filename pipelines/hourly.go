package pipelines

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

// HourlyConfig configures Hourly: the publication of one (type, version, hour).
type HourlyConfig struct {
	Root     string
	Type     string
	Version  int
	Hour     time.Time
	Force    bool          // publish even without the raw _COMPLETE marker
	Lookback time.Duration // drop event ids published in the previous hours within this (default 1h; 0 = default, <0 = none)
	Shards   int           // dataset files (default DefaultShards)
	KeyScope string        // recorded in the manifest's lineage ("" = transforms.DefaultKeyScope)
	Log      io.Writer     // progress lines; nil = silent
}

// DefaultShards is the default number of dataset files of an hour.
const DefaultShards = 4

// Publication states of an hour.
const (
	StatePublished        = "published"
	StateAlreadyPublished = "already-published"
)

// ErrNotReady is returned when an hour's raw _COMPLETE marker is missing
// (and Force is off): the scheduler should try again later.
var ErrNotReady = errors.New("pipelines: hour not complete yet (no raw _COMPLETE marker)")

// HourlyResult is the outcome of one publication.
type HourlyResult struct {
	Hour     layout.Hour
	State    string
	Manifest layout.ManifestDoc
	Removed  int // leftover objects of an unfinished earlier run that were removed
	Elapsed  time.Duration
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
	if c.Shards < 1 || c.Shards > 10000 {
		return fmt.Errorf("%w: shards %d not in 1..10000", ErrConfig, c.Shards)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		return err
	}
	if _, err := reg.Lookup(c.Type, c.Version); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}

// Hourly publishes one hour: it waits for nothing — without the raw
// _COMPLETE marker it returns ErrNotReady unless Force — and a published
// hour (its _SUCCESS exists) is left alone. Otherwise it removes the
// leftovers of an unfinished earlier run, dedupes the raw and late records
// of the hour (and drops event ids published within Lookback before), writes
// the dataset files, then _MANIFEST.json, then _SUCCESS.
func Hourly(ctx context.Context, cfg HourlyConfig) (*HourlyResult, error) {
	out := HourlyMany(ctx, []HourlyConfig{cfg})
	return out[0].Result, out[0].Err
}

// HourlyOutcome is the result of one HourlyMany entry.
type HourlyOutcome struct {
	Result *HourlyResult // nil when Err is set
	Err    error
}

// HourlyMany is Hourly for several (type, version, hour)s: those of one
// hour are published by one Beam job (a job costs far more to start than a
// small hour costs to run), hours go in time order, since an hour's lookback
// reads the datasets of the hours before it. The i-th outcome belongs to
// cfgs[i]; an entry that fails (not ready, bad configuration) does not stop
// the others, but a failed Beam job fails every entry it carried.
func HourlyMany(ctx context.Context, cfgs []HourlyConfig) []HourlyOutcome {
	out := make([]HourlyOutcome, len(cfgs))
	byHour := map[time.Time][]int{}
	var hours []time.Time
	for i, cfg := range cfgs {
		h := cfg.Hour.UTC()
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
				out[i].Result = j.res
			default:
				jobs, at = append(jobs, j), append(at, i)
			}
		}
		if err := runHourJobs(ctx, jobs); err != nil {
			for _, i := range at {
				out[i].Err = err
			}
			continue
		}
		for k, j := range jobs {
			if err := j.finish(ctx); err != nil {
				out[at[k]].Err = err
			} else {
				out[at[k]].Result = j.res
			}
		}
	}
	return out
}

// hourJob is one hour being published: what prepareHour found.
type hourJob struct {
	cfg         HourlyConfig
	b           blob.Bucket
	res         *HourlyResult
	parts       []string // raw and late part files
	lookback    []string // dataset files of the hours within Lookback
	lookbackSHA []string // their checksums (manifests)
	inputHours  []string
	start       time.Time
}

// prepareHour checks an hour (published? ready?), lists its inputs and
// lookback files, and removes what an unfinished earlier run left.
func prepareHour(ctx context.Context, cfg HourlyConfig) (*hourJob, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	j := &hourJob{cfg: cfg, start: time.Now()}
	h := layout.Hour{Type: cfg.Type, Version: cfg.Version, Hour: cfg.Hour}
	j.res = &HourlyResult{Hour: h}
	b, err := blob.Open(ctx, cfg.Root)
	if err != nil {
		return nil, err
	}
	j.b = b
	dir := layout.DatasetDir(cfg.Type, cfg.Version, cfg.Hour)
	if ok, err := b.Exists(ctx, dir+layout.Success); err != nil {
		return nil, err
	} else if ok {
		j.res.State = StateAlreadyPublished
		if m, err := ReadManifest(ctx, b, h); err == nil {
			j.res.Manifest = *m
		}
		return j, nil
	}
	if !cfg.Force {
		ok, err := b.Exists(ctx, transforms.CompleteName(cfg.Type, cfg.Version, cfg.Hour))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s: %w", h, ErrNotReady)
		}
	}
	for _, d := range []string{layout.RawDir(cfg.Type, cfg.Version, cfg.Hour), layout.LateDir(cfg.Type, cfg.Version, cfg.Hour)} {
		names, err := b.List(ctx, d)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if transforms.IsPart(n) {
				j.parts = append(j.parts, n)
			}
		}
	}
	// No _SUCCESS: whatever is in the dataset directory is a crashed run's
	// and was never published. Output is deterministic, so rewriting gives
	// the same bytes.
	left, err := b.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	if IsDryRun() {
		left = nil // a dry run changes nothing, leftovers included
	}
	for _, n := range left {
		if err := b.Delete(ctx, n); err != nil {
			return nil, err
		}
	}
	j.res.Removed = len(left)
	stale, err := b.List(ctx, transforms.StatsDir(cfg.Type, cfg.Version, cfg.Hour))
	if err != nil {
		return nil, err
	}
	if IsDryRun() {
		stale = nil
	}
	for _, n := range stale {
		if err := b.Delete(ctx, n); err != nil {
			return nil, err
		}
	}
	if len(left) > 0 && cfg.Log != nil {
		fmt.Fprintf(cfg.Log, "hourly %s: removed %d objects of an unfinished earlier run\n", h, len(left))
	}
	j.inputHours = []string{layout.FormatHour(cfg.Hour)}
	for back := time.Hour; cfg.Lookback > 0 && back <= cfg.Lookback; back += time.Hour {
		prev := layout.Hour{Type: cfg.Type, Version: cfg.Version, Hour: cfg.Hour.Add(-back)}
		m, err := ReadManifest(ctx, b, prev)
		if errors.Is(err, blob.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, f := range m.Files {
			j.lookback = append(j.lookback, layout.DatasetDir(prev.Type, prev.Version, prev.Hour)+f.Name)
			j.lookbackSHA = append(j.lookbackSHA, f.SHA256)
		}
		j.inputHours = append(j.inputHours, layout.FormatHour(prev.Hour))
	}
	return j, nil
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
			Hour: cfg.Hour, Shards: cfg.Shards, Lookback: j.lookback, LookbackSHA256: j.lookbackSHA}, j.parts)
		if err != nil {
			return err
		}
		transforms.EndBranch(s, files)
		names = append(names, j.res.Hour.String())
	}
	if len(names) == 0 {
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

// finish writes the manifest, then _SUCCESS, of a job whose Publish ran.
func (j *hourJob) finish(ctx context.Context) error {
	cfg, b, h := j.cfg, j.b, j.res.Hour
	acc := layout.Accounting{RawFiles: len(j.parts)}
	var written map[string]transforms.ShardStats
	if len(j.parts) > 0 {
		var err error
		if written, err = shardAccounting(ctx, b, cfg, &acc); err != nil {
			return err
		}
	}
	m, err := buildManifest(ctx, b, cfg, acc, j.inputHours, written)
	if err != nil {
		return err
	}
	if m.Records != acc.Published {
		return fmt.Errorf("pipelines: hourly %s: files hold %d records, the pipeline published %d", h, m.Records, acc.Published)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	dir := layout.DatasetDir(cfg.Type, cfg.Version, cfg.Hour)
	if err := blob.WriteAll(ctx, b, dir+layout.Manifest, append(data, '\n')); err != nil {
		return err
	}
	if err := blob.WriteAll(ctx, b, dir+layout.Success, nil); err != nil {
		return err
	}
	j.res.State, j.res.Manifest, j.res.Elapsed = StatePublished, *m, time.Since(j.start)
	return nil
}

// shardAccounting sums the shards' stats objects and removes them. It
// returns the stats by the dataset file each shard wrote.
func shardAccounting(ctx context.Context, b blob.Bucket, cfg HourlyConfig, acc *layout.Accounting) (map[string]transforms.ShardStats, error) {
	names, err := b.List(ctx, transforms.StatsDir(cfg.Type, cfg.Version, cfg.Hour))
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	written := map[string]transforms.ShardStats{}
	for _, n := range names {
		data, err := blob.ReadAll(ctx, b, n)
		if err != nil {
			return nil, err
		}
		var st transforms.ShardStats
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, fmt.Errorf("pipelines: %s: %w", n, err)
		}
		if seen[st.Shard] {
			return nil, fmt.Errorf("pipelines: shard %d reported twice", st.Shard)
		}
		seen[st.Shard] = true
		if st.File != "" {
			written[st.File] = st
		}
		acc.RawRecords += st.Raw
		acc.LateRecords += st.Late
		acc.DuplicatesDropped += st.Duplicates
		acc.LookbackDropped += st.Lookback
		acc.Published += st.Published
	}
	for _, n := range names {
		if err := b.Delete(ctx, n); err != nil {
			return nil, err
		}
	}
	return written, nil
}

// buildManifest reads back every dataset file: count, size, checksum. A
// file whose shard reported the checksum of what it wrote (written) must
// be stored with exactly those bytes, and is counted from its block
// headers; any other is decoded record by record.
func buildManifest(ctx context.Context, b blob.Bucket, cfg HourlyConfig, acc layout.Accounting, inputHours []string, written map[string]transforms.ShardStats) (*layout.ManifestDoc, error) {
	reg, err := schemas.Embedded()
	if err != nil {
		return nil, err
	}
	s, err := reg.Lookup(cfg.Type, cfg.Version)
	if err != nil {
		return nil, err
	}
	lay, err := record.NewLayout(s)
	if err != nil {
		return nil, err
	}
	dir := layout.DatasetDir(cfg.Type, cfg.Version, cfg.Hour)
	names, err := b.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	m := &layout.ManifestDoc{
		FormatVersion: 1, EventType: cfg.Type, SchemaVersion: cfg.Version, Hour: layout.FormatHour(cfg.Hour),
		SchemaFingerprint: s.Encrypted().Fingerprint, Input: acc, Files: []layout.ManifestFile{},
		Lineage: layout.Lineage{InputHours: inputHours, CodeVersion: CodeVersion(), KeyScope: cfg.KeyScope},
	}
	// Every file is read back and decoded: on all cores, as the files
	// are independent. Each goroutine fills its own slot.
	files := make([]layout.ManifestFile, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, n := range names {
		if !strings.HasSuffix(n, ".avro") {
			continue
		}
		g.Go(func() error {
			data, err := blob.ReadAll(gctx, b, n)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			sumHex := hex.EncodeToString(sum[:])
			var count int64
			if st, ok := written[path.Base(n)]; ok {
				if st.SHA256 != sumHex {
					return fmt.Errorf("pipelines: verify %s: stored bytes (sha256 %s) differ from those written (sha256 %s)", n, sumHex, st.SHA256)
				}
				if count, err = countBlocks(data); err == nil && count != st.Published {
					err = fmt.Errorf("%d records in its blocks, %d written", count, st.Published)
				}
			} else {
				count, err = countRecords(data, lay)
			}
			if err != nil {
				return fmt.Errorf("pipelines: verify %s: %w", n, err)
			}
			files[i] = layout.ManifestFile{Name: path.Base(n), Records: count, Bytes: int64(len(data)), SHA256: sumHex}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, f := range files {
		if f.Name != "" {
			m.Files = append(m.Files, f)
			m.Records += f.Records
		}
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	return m, nil
}

// countBlocks counts a container file's records from its block headers.
func countBlocks(data []byte) (int64, error) {
	r, err := record.NewOCFReader(bytes.NewReader(data), nil)
	if err != nil {
		return 0, err
	}
	return r.CountBlocks()
}

func countRecords(data []byte, lay *record.Layout) (int64, error) {
	r, err := record.NewOCFReader(bytes.NewReader(data), lay.Skip())
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		_, err := r.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// ReadManifest reads the manifest of a published hour (blob.ErrNotExist
// when the hour is not published: no _SUCCESS).
func ReadManifest(ctx context.Context, b blob.Bucket, h layout.Hour) (*layout.ManifestDoc, error) {
	dir := layout.DatasetDir(h.Type, h.Version, h.Hour)
	if ok, err := b.Exists(ctx, dir+layout.Success); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotExist, dir+layout.Success)
	}
	data, err := blob.ReadAll(ctx, b, dir+layout.Manifest)
	if err != nil {
		return nil, err
	}
	var m layout.ManifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("pipelines: %s: %w", dir+layout.Manifest, err)
	}
	return &m, nil
}

// VerifyHour re-reads a published hour and checks every file against its
// manifest (size, checksum).
func VerifyHour(ctx context.Context, b blob.Bucket, h layout.Hour) error {
	m, err := ReadManifest(ctx, b, h)
	if err != nil {
		return err
	}
	dir := layout.DatasetDir(h.Type, h.Version, h.Hour)
	for _, f := range m.Files {
		data, err := blob.ReadAll(ctx, b, dir+f.Name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if int64(len(data)) != f.Bytes || hex.EncodeToString(sum[:]) != f.SHA256 {
			return fmt.Errorf("pipelines: %s%s does not match its manifest", dir, f.Name)
		}
	}
	return nil
}

// RawHours lists the (type, version) pairs that have raw or late data for
// an hour.
func RawHours(ctx context.Context, b blob.Bucket, hour time.Time) ([]layout.Hour, error) {
	reg, err := schemas.Embedded()
	if err != nil {
		return nil, err
	}
	var out []layout.Hour
	for _, t := range reg.Types() {
		for _, v := range reg.Versions(t) {
			for _, d := range []string{layout.RawDir(t, v, hour), layout.LateDir(t, v, hour)} {
				names, err := b.List(ctx, d)
				if err != nil {
					return nil, err
				}
				if len(names) > 0 {
					out = append(out, layout.Hour{Type: t, Version: v, Hour: hour.UTC()})
					break
				}
			}
		}
	}
	return out, nil
}

// CodeVersion names the build of this binary for lineage.
func CodeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return "lockstream@" + s.Value
		}
	}
	return "lockstream@" + bi.Main.Version
}

// ReadDatasetEventIDs calls fn with the event id of every record of a
// published hour.
func ReadDatasetEventIDs(ctx context.Context, b blob.Bucket, h layout.Hour, fn func(id string)) error {
	m, err := ReadManifest(ctx, b, h)
	if err != nil {
		return err
	}
	var files []string
	for _, f := range m.Files {
		files = append(files, layout.DatasetDir(h.Type, h.Version, h.Hour)+f.Name)
	}
	return transforms.ReadDatasetRecords(ctx, b, h.Type, h.Version, files, func(cols []record.Column, lay *record.Layout, _ []byte) {
		fn(string(cols[lay.Dedupe].Bytes))
	})
}
