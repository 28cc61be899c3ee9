package bq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/googleapi"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/retry"
	"github.com/lockstream/lockstream/schemas"
)

// Errors callers test with errors.Is.
var (
	// ErrNotPublished: the hour's main part has no _SUCCESS marker yet.
	// Retry after `hourly` published it.
	ErrNotPublished = errors.New("bq: hour is not published")
	// ErrManifest: a part's _MANIFEST.json is missing, unreadable or does
	// not describe this hour or this binary's schema. Permanent.
	ErrManifest = errors.New("bq: manifest does not match")
	// ErrTable: the destination table exists with another partitioning or
	// an incompatible schema. Permanent until the table is fixed.
	ErrTable = errors.New("bq: destination table does not fit")
	// ErrLoadFailed is wrapped by every *JobError.
	ErrLoadFailed = errors.New("bq: load job failed")
	// ErrRowCount: the load job reported another row count than the
	// manifest. No marker is written; a re-run reloads the partition.
	ErrRowCount = errors.New("bq: loaded row count differs from the manifest")
)

// Retry rule for failed load jobs (the job ran and reported an error):
// reasons in RetryableReasons are retried with a new job, up to
// Loader.MaxAttempts jobs in all, waiting Loader.Backoff, then twice as long
// each time. Every other reason — invalid, invalidQuery, notFound,
// accessDenied, quotaExceeded, duplicate, stopped, or one we do not know — is
// permanent and returned at once. jobs.insert itself is retried by the
// client library (same job id, so idempotent).
var RetryableReasons = []string{"backendError", "rateLimitExceeded", "internalError", "jobBackendError", "jobInternalError"}

// JobError is a load job that finished with an error.
type JobError struct {
	JobID     string
	Table     string
	Attempt   int
	Result    *bigquery.Error   // the job's errorResult
	Errors    []*bigquery.Error // all errors the job reported
	Retryable bool
}

func (e *JobError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bq: load job %s into %s (attempt %d) failed", e.JobID, e.Table, e.Attempt)
	if e.Result != nil {
		fmt.Fprintf(&b, ": %s: %s", e.Result.Reason, e.Result.Message)
	}
	n := 0
	for _, x := range e.Errors {
		if x == nil || (e.Result != nil && x.Reason == e.Result.Reason && x.Message == e.Result.Message) {
			continue
		}
		if n == 3 {
			fmt.Fprintf(&b, " (and %d more)", len(e.Errors)-3)
			break
		}
		fmt.Fprintf(&b, "; %s: %s", x.Reason, x.Message)
		n++
	}
	if e.Retryable {
		b.WriteString(" [retryable]")
	}
	return b.String()
}

func (e *JobError) Unwrap() []error {
	if e.Result == nil {
		return []error{ErrLoadFailed}
	}
	return []error{ErrLoadFailed, e.Result}
}

// IsRetryable reports whether err is a failed load job whose reason is in
// RetryableReasons.
func IsRetryable(err error) bool {
	var je *JobError
	return errors.As(err, &je) && je.Retryable
}

// Loader loads published hours into BigQuery.
type Loader struct {
	Client  *bigquery.Client
	Dataset string
	// Registry resolves event types; nil means schemas.Embedded().
	Registry *schemas.Registry
	// MaxAttempts is the most load jobs per hour (first one included);
	// default 4 (three retries).
	MaxAttempts int
	// Backoff is the wait before the first retry, doubled for each next
	// one; default 15 s.
	Backoff time.Duration
	// Sleep waits between retries; default a timer that honours ctx (tests
	// replace it).
	Sleep func(ctx context.Context, d time.Duration) error
	// Now stamps markers; default time.Now.
	Now func() time.Time
	// Log gets one line per job; default slog.Default(). Lines hold table
	// names, job ids, counts and BigQuery's error reasons — never data.
	Log *slog.Logger
}

// LoadResult describes what LoadHour did.
type LoadResult struct {
	Hour      layout.Hour
	Table     string   // "project:dataset.Type_vN$YYYYMMDDHH"
	JobID     string   // the job that loaded the partition (from the marker when Skipped)
	Attempts  int      // jobs issued by this call
	Skipped   bool     // a marker said these parts were loaded: no job issued
	Parts     []string // the hour's published parts, loaded together: main, late-0001, …
	Files     int
	Records   int64 // rows in the parts' manifests (= rows loaded)
	Marker    string
	SourceURI []string
}

// MarkerFormatVersion is the version of the load marker written now: 2
// added Parts (a format-1 marker is of the main part alone).
const MarkerFormatVersion = 2

// MarkerDoc is the content of the load marker.
type MarkerDoc struct {
	FormatVersion int    `json:"format_version"`
	Table         string `json:"table"`
	JobID         string `json:"job_id"`
	Location      string `json:"location,omitempty"`
	// Parts are the parts of the hour the job loaded (absent in format 1:
	// the main part alone).
	Parts             []string  `json:"parts,omitempty"`
	Records           int64     `json:"records"`
	SchemaFingerprint string    `json:"schema_fingerprint"`
	LoadedAt          time.Time `json:"loaded_at"`
}

// ReadMarker reads the load marker of the parts of h as published now into
// project.dataset; ok is false when that set of parts is not loaded (yet).
func ReadMarker(ctx context.Context, b blob.Bucket, h *dataset.Hour, project, bqDataset string) (m MarkerDoc, ok bool, err error) {
	return readMarker(ctx, b, layout.LoadMarker(h.Hour, project, bqDataset, len(h.Parts)))
}

// PartitionDecorator is the hourly partition suffix, "$YYYYMMDDHH".
func PartitionDecorator(hour time.Time) string { return "$" + hour.UTC().Format("2006010215") }

func (l *Loader) defaults() (*schemas.Registry, error) {
	if l.Client == nil {
		return nil, errors.New("bq: Loader.Client is nil")
	}
	if err := checkIDs(l.Client.Project(), l.Dataset); err != nil {
		return nil, err
	}
	if l.Registry != nil {
		return l.Registry, nil
	}
	return schemas.Embedded()
}

func (l *Loader) log() *slog.Logger {
	if l.Log != nil {
		return l.Log
	}
	return slog.Default()
}

// LoadHour loads one published hour — every file of every published part:
// the main part and its late supplements, under gcsRoot, "gs://bucket/prefix"
// (the GCS location of the root the bucket reads) — into the hour's
// partition of <dataset>.<Type>_v<N>, creating the table if missing. It is
// idempotent: the partition is replaced (WRITE_TRUNCATE) by the union of the
// parts, and a marker next to _SUCCESS naming that set of parts makes a
// re-run issue no job at all; a supplement published later makes the next
// LoadHour reload the partition with every part.
func (l *Loader) LoadHour(ctx context.Context, bucket blob.Bucket, hour layout.Hour, gcsRoot string) (LoadResult, error) {
	hour.Hour = hour.Hour.UTC().Truncate(time.Hour)
	res := LoadResult{Hour: hour}
	reg, err := l.defaults()
	if err != nil {
		return res, err
	}
	if !strings.HasPrefix(gcsRoot, "gs://") || len(gcsRoot) <= len("gs://") {
		return res, fmt.Errorf("bq: GCS root %q must be gs://bucket[/prefix]", gcsRoot)
	}
	gcsRoot = strings.TrimSuffix(gcsRoot, "/")
	s, err := reg.Lookup(hour.Type, hour.Version)
	if err != nil {
		return res, fmt.Errorf("bq: %s: %w", hour, err)
	}
	project := l.Client.Project()
	table := TableName(hour.Type, hour.Version)
	res.Table = fmt.Sprintf("%s:%s.%s%s", project, l.Dataset, table, PartitionDecorator(hour.Hour))

	// A supplement published while a job runs (ours or a concurrent
	// run's, which may finish after ours and truncate the partition to
	// fewer parts) is caught by reading the parts again after the job: if
	// they changed, the partition is loaded again with all of them before
	// the marker is written.
	const maxRounds = 3
	var loadedParts []string
	for round := 1; ; round++ {
		h, err := readHour(ctx, bucket, hour, s)
		if err != nil {
			return res, err
		}
		names := partNames(h)
		if loadedParts != nil && slices.Equal(names, loadedParts) {
			break // the job loaded the parts as they are now
		}
		if round > maxRounds {
			return res, fmt.Errorf("bq: %s: parts keep changing while loading (%v, then %v); run again", hour, loadedParts, names)
		}
		res.Parts, res.Marker = names, layout.LoadMarker(hour, project, l.Dataset, len(h.Parts))
		if loadedParts == nil {
			if m, ok, err := readMarker(ctx, bucket, res.Marker); err != nil {
				return res, err
			} else if ok {
				res.Skipped, res.JobID, res.Records = true, m.JobID, m.Records
				res.Files = len(h.Files())
				return res, nil
			}
		}
		res.Records, res.Files, res.SourceURI = h.Records(), 0, nil
		for _, f := range h.Files() {
			res.SourceURI = append(res.SourceURI, gcsRoot+"/"+f.Name)
			res.Files++
		}
		if len(res.SourceURI) > 0 {
			if err := l.ensureTable(ctx, s, table); err != nil {
				return res, err
			}
			attempts := res.Attempts
			if err := l.load(ctx, &res, table); err != nil {
				return res, err
			}
			res.Attempts += attempts
		}
		// An hour without files (no events) gets a marker and no job: its
		// partition stays empty.
		loadedParts = names
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	doc, _ := json.MarshalIndent(MarkerDoc{FormatVersion: MarkerFormatVersion, Table: res.Table, JobID: res.JobID, Parts: res.Parts,
		Records: res.Records, SchemaFingerprint: s.Encrypted().Fingerprint, LoadedAt: now().UTC()}, "", "  ")
	if err := blob.WriteAll(ctx, bucket, res.Marker, append(doc, '\n')); err != nil && !errors.Is(err, blob.ErrExist) {
		// The partition is loaded; without the marker a re-run loads it
		// again (WRITE_TRUNCATE: same rows, no duplicates).
		return res, fmt.Errorf("bq: %s loaded by job %s, but writing the marker failed: %w", hour, res.JobID, err)
	}
	return res, nil
}

// readHour reads the published parts of h through dataset.Read and checks
// every part's manifest against the hour and the schema.
func readHour(ctx context.Context, b blob.Bucket, h layout.Hour, s *schemas.Schema) (*dataset.Hour, error) {
	dh, err := dataset.Read(ctx, b, h)
	if err != nil {
		if errors.Is(err, blob.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: %v", ErrManifest, h, err)
		}
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.As(err, &se) || errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %s: %v", ErrManifest, h, err)
		}
		return nil, fmt.Errorf("bq: %s: %w", h, err)
	}
	if !dh.Published() {
		return nil, fmt.Errorf("%w: %s (no %s%s)", ErrNotPublished, h, layout.DatasetDir(h.Type, h.Version, h.Hour), layout.Success)
	}
	for _, p := range dh.Parts {
		if err := checkManifest(p, h, s); err != nil {
			return nil, err
		}
	}
	return dh, nil
}

func partNames(h *dataset.Hour) []string {
	out := make([]string, len(h.Parts))
	for i, p := range h.Parts {
		out[i] = p.Name
	}
	return out
}

func readMarker(ctx context.Context, b blob.Bucket, name string) (MarkerDoc, bool, error) {
	var m MarkerDoc
	ok, err := b.Exists(ctx, name)
	if err != nil || !ok {
		return m, false, err
	}
	data, err := blob.ReadAll(ctx, b, name)
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, fmt.Errorf("bq: marker %s is unreadable (delete it to reload the hour): %w", name, err)
	}
	return m, true, nil
}

// checkManifest checks that a part's manifest describes hour h, part p,
// in this binary's encrypted schema s, and names files inside the part.
func checkManifest(p dataset.Part, h layout.Hour, s *schemas.Schema) error {
	m := p.Manifest
	switch {
	case m.EventType != h.Type || m.SchemaVersion != h.Version || m.Hour != layout.FormatHour(h.Hour):
		return fmt.Errorf("%w: %s %s: manifest says %s v%d %s", ErrManifest, h, p.Name, m.EventType, m.SchemaVersion, m.Hour)
	case m.PartName() != p.Name:
		return fmt.Errorf("%w: %s %s: manifest says part %s", ErrManifest, h, p.Name, m.PartName())
	case !s.Encrypted().FingerprintMatches(m.SchemaFingerprint, m.FormatVersion):
		return fmt.Errorf("%w: %s %s: schema fingerprint %s, this binary's encrypted schema is %s", ErrManifest, h, p.Name, m.SchemaFingerprint, s.Encrypted().Fingerprint)
	}
	for _, f := range m.Files {
		if f.Name == "" || strings.Contains(f.Name, "..") || strings.HasPrefix(f.Name, "/") {
			return fmt.Errorf("%w: %s %s: bad file name %q", ErrManifest, h, p.Name, f.Name)
		}
	}
	return nil
}

// TableExists reports whether the table of s exists, and checks that an
// existing one fits (partitioning, columns); it changes nothing.
func (l *Loader) TableExists(ctx context.Context, s *schemas.Schema) (bool, error) {
	want, err := EncryptedTableSchema(s)
	if err != nil {
		return false, err
	}
	table := TableName(s.Type, s.Version)
	md, err := l.Client.Dataset(l.Dataset).Table(table).Metadata(ctx)
	if isStatus(err, http.StatusNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bq: table %s.%s: %w", l.Dataset, table, err)
	}
	return true, checkTable(md, want, l.Dataset+"."+table)
}

// EnsureTable creates the table of s if it is missing, as LoadHour would.
func (l *Loader) EnsureTable(ctx context.Context, s *schemas.Schema) error {
	return l.ensureTable(ctx, s, TableName(s.Type, s.Version))
}

// ensureTable creates the table if missing (hour-partitioned on _hour,
// clustered on _subject) and checks an existing one fits.
func (l *Loader) ensureTable(ctx context.Context, s *schemas.Schema, table string) error {
	want, err := EncryptedTableSchema(s)
	if err != nil {
		return err
	}
	t := l.Client.Dataset(l.Dataset).Table(table)
	md, err := t.Metadata(ctx)
	if isStatus(err, http.StatusNotFound) {
		err = t.Create(ctx, &bigquery.TableMetadata{
			Name:             table,
			Description:      fmt.Sprintf("lockstream %s (encrypted; schema fingerprint %s). Loaded hourly from GCS; decrypt through the views of `lockstream bq views`.", s, s.Encrypted().Fingerprint),
			Schema:           want,
			TimePartitioning: &bigquery.TimePartitioning{Type: bigquery.HourPartitioningType, Field: schemas.MetaHour},
			Clustering:       &bigquery.Clustering{Fields: []string{schemas.MetaSubject}},
			Labels:           map[string]string{"lockstream": "dataset"},
		})
		if err == nil {
			l.log().Info("bq: created table", "table", l.Dataset+"."+table)
			return nil
		}
		if !isStatus(err, http.StatusConflict) {
			return fmt.Errorf("bq: create table %s.%s: %w", l.Dataset, table, err)
		}
		md, err = t.Metadata(ctx) // created concurrently: check it
	}
	if err != nil {
		return fmt.Errorf("bq: table %s.%s: %w", l.Dataset, table, err)
	}
	return checkTable(md, want, l.Dataset+"."+table)
}

func checkTable(md *bigquery.TableMetadata, want bigquery.Schema, name string) error {
	tp := md.TimePartitioning
	if tp == nil || tp.Type != bigquery.HourPartitioningType || tp.Field != schemas.MetaHour {
		return fmt.Errorf("%w: %s must be partitioned by HOUR on %s, it is %+v", ErrTable, name, schemas.MetaHour, tp)
	}
	have := map[string]*bigquery.FieldSchema{}
	for _, f := range md.Schema {
		have[f.Name] = f
	}
	for _, f := range want {
		h, ok := have[f.Name]
		if !ok {
			return fmt.Errorf("%w: %s has no column %s", ErrTable, name, f.Name)
		}
		if h.Type != f.Type || (h.Required && !f.Required) {
			return fmt.Errorf("%w: %s column %s is %s (required %v), want %s (required %v)", ErrTable, name, f.Name, h.Type, h.Required, f.Type, f.Required)
		}
	}
	return nil
}

func isStatus(err error, code int) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == code
}

func (l *Loader) load(ctx context.Context, res *LoadResult, table string) error {
	return l.retry(ctx, res, func() error {
		ref := bigquery.NewGCSReference(res.SourceURI...)
		ref.SourceFormat = bigquery.Avro
		ld := l.Client.Dataset(l.Dataset).Table(table + PartitionDecorator(res.Hour.Hour)).LoaderFrom(ref)
		ld.UseAvroLogicalTypes = true
		ld.WriteDisposition = bigquery.WriteTruncate
		// The table was created above with the right partitioning; a load
		// must never create one with BigQuery's defaults.
		ld.CreateDisposition = bigquery.CreateNever
		ld.JobID = "lockstream_load_" + table + "_" + strings.TrimPrefix(PartitionDecorator(res.Hour.Hour), "$")
		ld.AddJobIDSuffix = true
		ld.Labels = map[string]string{"lockstream": "load"}
		return l.runJob(ctx, res, ld, "load "+res.Hour.String())
	})
}

// retry runs attempt (one job) under the retry rule (see RetryableReasons).
func (l *Loader) retry(ctx context.Context, res *LoadResult, attempt func() error) error {
	maxAttempts, backoff := l.MaxAttempts, l.Backoff
	if maxAttempts <= 0 {
		maxAttempts = 4
	}
	if backoff <= 0 {
		backoff = 15 * time.Second
	}
	return retry.Do(ctx, retry.Policy{
		Attempts:  maxAttempts,
		Backoff:   retry.Backoff{First: backoff, NoJitter: true},
		Retryable: IsRetryable,
		Sleep:     l.Sleep,
		OnRetry: func(n int, wait time.Duration, err error) {
			l.log().Warn("bq: job failed, retrying", "table", res.Table, "attempt", n, "in", wait, "err", err)
		},
	}, func(n int) error {
		res.Attempts = n
		return attempt()
	})
}

// runJob starts one load job, waits for it and turns its outcome into an
// error: *JobError for a job that failed, ErrRowCount when BigQuery loaded
// another number of rows than res.Records.
func (l *Loader) runJob(ctx context.Context, res *LoadResult, ld *bigquery.Loader, what string) error {
	job, err := ld.Run(ctx)
	if err != nil {
		return fmt.Errorf("bq: %s: start job: %w", what, err)
	}
	res.JobID = job.ID()
	st, err := job.Wait(ctx)
	if err != nil {
		return fmt.Errorf("bq: %s: wait for job %s: %w", what, job.ID(), err)
	}
	if jerr := st.Err(); jerr != nil {
		je := &JobError{JobID: job.ID(), Table: res.Table, Attempt: res.Attempts, Errors: st.Errors}
		var be *bigquery.Error
		if errors.As(jerr, &be) {
			je.Result = be
			je.Retryable = slices.Contains(RetryableReasons, be.Reason)
		} else {
			je.Result = &bigquery.Error{Message: jerr.Error()}
		}
		return je
	}
	if st.Statistics != nil {
		if ls, ok := st.Statistics.Details.(*bigquery.LoadStatistics); ok && ls.OutputRows != res.Records {
			return fmt.Errorf("%w: %s: job %s loaded %d rows, want %d", ErrRowCount, what, job.ID(), ls.OutputRows, res.Records)
		}
	}
	l.log().Info("bq: job done", "what", what, "table", res.Table, "job", job.ID(), "rows", res.Records)
	return nil
}
