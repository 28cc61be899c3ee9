package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
)

func init() {
	openGCS = func(ctx context.Context, root string) (Bucket, error) {
		return OpenGCS(ctx, root)
	}
}

// writerTokenKey is the object metadata key holding the random token of the
// writer that created the object. Close uses it to recognise its own object
// when a retried conditional create is refused because the first attempt
// did succeed (the response was lost).
const writerTokenKey = "lockstream-writer"

// newWriterToken returns a fresh random writer token (writerTokenKey).
func newWriterToken() string {
	var tok [16]byte
	rand.Read(tok[:])
	return hex.EncodeToString(tok[:])
}

// writtenBy returns the attributes of the object o names when the writer
// with token created it.
func writtenBy(ctx context.Context, o *storage.ObjectHandle, token string) (*storage.ObjectAttrs, bool) {
	attrs, err := o.Attrs(ctx)
	if err != nil || attrs.Metadata[writerTokenKey] != token {
		return nil, false
	}
	return attrs, true
}

// DefaultGCSMemoryLimit is how many bytes a GCS writer keeps in memory
// before it spills the object to a temporary file.
const DefaultGCSMemoryLimit = 16 << 20

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// DefaultGCSMaxAttempts is how often the process-wide client (blob.Open)
// tries one call (a read, list, delete or metadata request) before the call
// fails. The storage client's own default is to retry a failing call until
// its context ends, and a pipeline's context has no deadline: an unreachable
// or failing GCS hung the job instead of failing it. With the client's
// backoff (1 s doubling to 30 s, jittered) 10 attempts span about 1-3
// minutes.
const DefaultGCSMaxAttempts = 10

// DefaultGCSUploadTimeout is the base of an upload's deadline, which is
// this plus a second per MiB of the object (WithGCSUploadTimeout sets the
// base). The storage client retries an upload until its context ends
// (it does not count an upload's attempts), so the deadline is what ends a
// failing one.
const DefaultGCSUploadTimeout = 5 * time.Minute

// GCS is a Bucket on a Google Cloud Storage bucket and prefix.
type GCS struct {
	client        *storage.Client
	bucket        *storage.BucketHandle
	root          string // "gs://bucket/prefix" as normalised
	prefix        string // "" or "prefix/"
	memLimit      int
	tempDir       string
	uploadTimeout time.Duration // base of an upload's deadline (uploadDeadline)
	// chunkSize is the upload chunk size of spilled (large) objects;
	// 0 means the client's default (16 MiB). Tests lower it to exercise
	// multi-chunk resumable uploads.
	chunkSize int
}

var _ Bucket = (*GCS)(nil)

// GCSOption configures OpenGCS.
type GCSOption func(*gcsConfig)

type gcsConfig struct {
	client        *storage.Client
	memLimit      int
	tempDir       string
	uploadTimeout time.Duration
}

// WithGCSClient makes the bucket use c (which the caller keeps and closes)
// instead of a client of its own.
func WithGCSClient(c *storage.Client) GCSOption {
	return func(cfg *gcsConfig) { cfg.client = c }
}

// WithGCSMemoryLimit sets how many bytes a writer buffers in memory before
// it spills to a temporary file (default DefaultGCSMemoryLimit).
func WithGCSMemoryLimit(n int) GCSOption {
	return func(cfg *gcsConfig) { cfg.memLimit = n }
}

// WithGCSUploadTimeout sets the base of each upload's deadline (default
// DefaultGCSUploadTimeout); a second per MiB of the object is added.
func WithGCSUploadTimeout(d time.Duration) GCSOption {
	return func(cfg *gcsConfig) { cfg.uploadTimeout = d }
}

// WithGCSTempDir sets the directory for spilled writers (default
// os.TempDir()).
func WithGCSTempDir(dir string) GCSOption {
	return func(cfg *gcsConfig) { cfg.tempDir = dir }
}

// The client blob.Open uses: one per process, created on first use. Pipelines
// open buckets in every DoFn Setup; one client shares connections. A
// changed STORAGE_EMULATOR_HOST (tests run one after another, each with an
// emulator of its own) gets a new client; the old one stays with those
// holding it.
var (
	sharedMu     sync.Mutex
	sharedClient *storage.Client
	sharedHost   string // STORAGE_EMULATOR_HOST when sharedClient was made
	// sharedRetry is the shared client's retry policy (tests add a shorter
	// backoff).
	sharedRetry = []storage.RetryOption{storage.WithMaxAttempts(DefaultGCSMaxAttempts)}
)

func defaultClient(ctx context.Context) (*storage.Client, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	host := os.Getenv("STORAGE_EMULATOR_HOST")
	if sharedClient != nil && host == sharedHost {
		return sharedClient, nil
	}
	// storage.NewClient honours STORAGE_EMULATOR_HOST (no auth, emulator
	// endpoint) and Application Default Credentials otherwise. Reads go
	// through the JSON API: GCS serves it like XML, and emulators such as
	// fake-gcs-server answer only JSON reads.
	c, err := storage.NewClient(context.WithoutCancel(ctx), storage.WithJSONReads())
	if err != nil {
		return nil, err
	}
	c.SetRetry(sharedRetry...)
	sharedClient, sharedHost = c, host
	return c, nil
}

// ParseGCSRoot splits "gs://bucket/prefix" into the bucket and the object
// name prefix ("" or ending in "/").
func ParseGCSRoot(root string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(root, "gs://")
	if !ok {
		return "", "", fmt.Errorf("blob: %q is not a gs:// root", root)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("blob: %q has no bucket", root)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		if err := checkName(prefix); err != nil {
			return "", "", fmt.Errorf("blob: %q: bad prefix", root)
		}
		prefix += "/"
	}
	return bucket, prefix, nil
}

// OpenGCS opens gs://bucket/prefix. Without WithGCSClient it uses one
// process-wide client made by storage.NewClient (which honours
// STORAGE_EMULATOR_HOST). It does not contact the server.
func OpenGCS(ctx context.Context, root string, opts ...GCSOption) (*GCS, error) {
	bucket, prefix, err := ParseGCSRoot(root)
	if err != nil {
		return nil, err
	}
	cfg := gcsConfig{memLimit: DefaultGCSMemoryLimit, uploadTimeout: DefaultGCSUploadTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.memLimit < 0 {
		return nil, fmt.Errorf("blob: negative GCS memory limit %d", cfg.memLimit)
	}
	if cfg.uploadTimeout <= 0 {
		return nil, fmt.Errorf("blob: GCS upload timeout %v: want a positive duration", cfg.uploadTimeout)
	}
	c := cfg.client
	if c == nil {
		if c, err = defaultClient(ctx); err != nil {
			return nil, fmt.Errorf("blob: %s: storage client: %w", root, err)
		}
	}
	return &GCS{
		client:        c,
		bucket:        c.Bucket(bucket),
		root:          "gs://" + bucket + "/" + strings.TrimSuffix(prefix, "/"),
		prefix:        prefix,
		memLimit:      cfg.memLimit,
		tempDir:       cfg.tempDir,
		uploadTimeout: cfg.uploadTimeout,
	}, nil
}

// uploadDeadline is how long an upload of size bytes may take: the base
// plus a second per MiB.
func (g *GCS) uploadDeadline(size int64) time.Duration {
	return g.uploadTimeout + time.Duration(size>>20)*time.Second
}

// Root returns "gs://bucket/prefix".
func (g *GCS) Root() string { return g.root }

// checkName applies the same rules as Dir: a clean, relative, non-empty
// slash path.
func checkName(name string) error {
	clean := path.Clean("/" + name)[1:]
	if clean == "" || clean != name || strings.HasPrefix(name, "/") || strings.ContainsAny(name, "\r\n") {
		return fmt.Errorf("blob: invalid object name %q", name)
	}
	return nil
}

func (g *GCS) object(name string) (*storage.ObjectHandle, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return g.bucket.Object(g.prefix + name), nil
}

// Create returns a writer that buffers the object (in memory up to the
// memory limit, then in a temporary file) and uploads it at Close in one
// conditional request (ifGenerationMatch=0) carrying its CRC32C.
func (g *GCS) Create(ctx context.Context, name string) (Writer, error) {
	o, err := g.object(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	return &gcsWriter{g: g, o: o, name: name, ctx: ctx, cancel: cancel, token: newWriterToken()}, nil
}

type gcsWriter struct {
	g      *GCS
	o      *storage.ObjectHandle
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	token  string

	buf   bytes.Buffer
	spill *os.File // non-nil once the object outgrew memLimit
	size  int64
	crc   uint32
	err   error // sticky write error
	done  bool
}

func (w *gcsWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("blob: write %s: writer is closed", w.name)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.spill == nil && w.buf.Len()+len(p) > w.g.memLimit {
		f, err := os.CreateTemp(w.g.tempDir, "lockstream-gcs-*")
		if err == nil {
			// Unlinked at once: the open file stays readable and
			// writable, and a process killed mid-write leaves nothing
			// behind in the temporary directory.
			err = os.Remove(f.Name())
		}
		if err == nil {
			_, err = f.Write(w.buf.Bytes())
		}
		if err != nil {
			if f != nil {
				f.Close()
				os.Remove(f.Name())
			}
			w.err = fmt.Errorf("blob: write %s: spill: %w", w.name, err)
			return 0, w.err
		}
		w.spill = f
		w.buf = bytes.Buffer{}
	}
	var n int
	var err error
	if w.spill != nil {
		n, err = w.spill.Write(p)
	} else {
		n, err = w.buf.Write(p)
	}
	w.crc = crc32.Update(w.crc, crc32cTable, p[:n])
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("blob: write %s: spill: %w", w.name, err)
		return n, w.err
	}
	return n, nil
}

func (w *gcsWriter) release() {
	w.done = true
	w.cancel()
	if w.spill != nil {
		w.spill.Close() // unlinked when created
	}
	w.buf = bytes.Buffer{}
}

// Close uploads the object. Nothing is visible under the name unless the
// upload finished and the server verified the CRC32C.
func (w *gcsWriter) Close() error {
	if w.done {
		return nil
	}
	defer w.release()
	if w.err != nil {
		return w.err
	}
	var body io.Reader = bytes.NewReader(w.buf.Bytes())
	if w.spill != nil {
		if _, err := w.spill.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("blob: write %s: spill: %w", w.name, err)
		}
		body = w.spill
	}
	// ifGenerationMatch=0 makes the create idempotent, so the client's
	// default policy (RetryIdempotent) retries it on 408/429/5xx and
	// connection errors: the upload initiation, every chunk of a resumable
	// upload and a one-request (multipart) upload alike, until the upload's
	// context ends: its deadline is what ends a failing upload.
	limit := w.g.uploadDeadline(w.size)
	uctx, cancel := context.WithTimeout(w.ctx, limit)
	defer cancel()
	sw := w.o.If(storage.Conditions{DoesNotExist: true}).NewWriter(uctx)
	sw.CRC32C = w.crc
	sw.SendCRC32C = true
	sw.Metadata = map[string]string{writerTokenKey: w.token}
	sw.ContentType = "application/octet-stream"
	if w.spill == nil {
		// One request (the client buffers ChunkSize bytes; objects smaller
		// than that go in one retryable multipart upload).
		sw.ChunkSize = int(min(w.size+1, int64(googleapi.DefaultUploadChunkSize)))
	} else if w.g.chunkSize > 0 {
		sw.ChunkSize = w.g.chunkSize
	}
	_, err := io.Copy(sw, body)
	if cerr := sw.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		return w.verify(sw.Attrs())
	}
	if w.ctx.Err() != nil {
		return fmt.Errorf("blob: write %s: %w", w.name, err)
	}
	if uctx.Err() != nil {
		err = fmt.Errorf("upload not finished within %v: %w", limit, err)
	}
	// The outcome of an upload that failed at the client may still be an
	// object of ours: an attempt succeeded but its response was lost, and
	// the retry then failed (412 from our own object, 404 for a finished
	// resumable session, or another error). The token tells ours from
	// another writer's object; ours is kept only if it is whole.
	if attrs, ok := writtenBy(w.ctx, w.o, w.token); ok {
		return w.verify(attrs)
	}
	if isStatus(err, http.StatusPreconditionFailed) {
		return fmt.Errorf("%w: %s", ErrExist, w.name)
	}
	return fmt.Errorf("blob: write %s: %w", w.name, err)
}

// verify checks the committed object against what was written. GCS itself
// refuses an upload whose data does not match the declared CRC32C; this
// catches a server or emulator that does not (fake-gcs-server v1.56 checks
// it for one-request uploads only, and appends a re-sent resumable chunk
// instead of honouring its offset). A mismatching object is deleted (that
// generation only) and Close fails.
func (w *gcsWriter) verify(attrs *storage.ObjectAttrs) error {
	if attrs.Size == w.size && attrs.CRC32C == w.crc {
		return nil
	}
	derr := w.o.If(storage.Conditions{GenerationMatch: attrs.Generation}).Delete(w.ctx)
	if derr != nil && !errors.Is(derr, storage.ErrObjectNotExist) {
		return fmt.Errorf("blob: write %s: server stored %d bytes (crc32c %08x), want %d (%08x), and deleting it failed: %w",
			w.name, attrs.Size, attrs.CRC32C, w.size, w.crc, derr)
	}
	return fmt.Errorf("blob: write %s: server stored %d bytes (crc32c %08x), want %d (%08x); deleted",
		w.name, attrs.Size, attrs.CRC32C, w.size, w.crc)
}

// isMine reports whether the object under the name is the one this writer
// uploaded (whole: same token, size and CRC32C).
func (w *gcsWriter) isMine() bool {
	attrs, ok := writtenBy(w.ctx, w.o, w.token)
	return ok && attrs.Size == w.size && attrs.CRC32C == w.crc
}

// Abort discards the object: nothing was sent yet (or the upload in flight
// is cancelled) and any temporary file is removed.
func (w *gcsWriter) Abort() {
	if w.done {
		return
	}
	w.release()
}

func isStatus(err error, code int) bool {
	var e *googleapi.Error
	return errors.As(err, &e) && e.Code == code
}

// Open reads an object. Reads are retried by the client; a full read is
// checked against the object's CRC32C by the client.
func (g *GCS) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	o, err := g.object(name)
	if err != nil {
		return nil, err
	}
	r, err := o.NewReader(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotExist, name)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", name, err)
	}
	return r, nil
}

// Exists reports whether an object exists.
func (g *GCS) Exists(ctx context.Context, name string) (bool, error) {
	o, err := g.object(name)
	if err != nil {
		return false, err
	}
	_, err = o.Attrs(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blob: stat %s: %w", name, err)
	}
	return true, nil
}

// List returns the names (relative to the root) starting with prefix.
func (g *GCS) List(ctx context.Context, prefix string) ([]string, error) {
	q := &storage.Query{Prefix: g.prefix + prefix, Projection: storage.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return nil, fmt.Errorf("blob: list %s: %w", prefix, err)
	}
	var names []string
	it := g.bucket.Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("blob: list %s: %w", prefix, err)
		}
		names = append(names, strings.TrimPrefix(attrs.Name, g.prefix))
	}
	slices.Sort(names)
	return names, nil
}

// Delete removes an object; a missing one is not an error. It deletes the
// generation it sees (ifGenerationMatch), which makes the call idempotent
// and so retried by the client.
func (g *GCS) Delete(ctx context.Context, name string) error {
	o, err := g.object(name)
	if err != nil {
		return err
	}
	for range 3 {
		attrs, err := o.Attrs(ctx)
		if errors.Is(err, storage.ErrObjectNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("blob: delete %s: %w", name, err)
		}
		err = o.If(storage.Conditions{GenerationMatch: attrs.Generation}).Delete(ctx)
		switch {
		case err == nil, errors.Is(err, storage.ErrObjectNotExist):
			return nil
		case isStatus(err, http.StatusPreconditionFailed):
			continue // replaced meanwhile: delete the new generation
		default:
			return fmt.Errorf("blob: delete %s: %w", name, err)
		}
	}
	return fmt.Errorf("blob: delete %s: object keeps changing", name)
}
