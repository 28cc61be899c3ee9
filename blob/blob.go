package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Errors callers test with errors.Is.
var (
	ErrExist    = errors.New("blob: object already exists")
	ErrNotExist = errors.New("blob: object does not exist")
	// ErrPrecondition: a conditional write or delete found the object at
	// another generation than the one it was given (someone else changed
	// or created it meanwhile).
	ErrPrecondition = errors.New("blob: precondition failed: the object changed")
)

// Bucket is a flat namespace of immutable objects under one root.
type Bucket interface {
	// Create returns a writer for a new object; the object appears, whole,
	// when Close returns nil. It fails with ErrExist if name exists (at
	// Close at the latest). Abort (or a failed Close) leaves nothing.
	Create(ctx context.Context, name string) (Writer, error)
	// Open reads an object.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// Exists reports whether name exists.
	Exists(ctx context.Context, name string) (bool, error)
	// List returns the names below prefix (a "directory" ending in "/" or
	// any name prefix), sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes an object; a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// Root is the root this bucket was opened with.
	Root() string

	// Versioned objects are small objects replaced as a whole under a
	// precondition on their generation (a positive number that changes
	// with every write): leases and writer records, which several
	// processes update.
	//
	// ReadVersion reads an object and its generation (ErrNotExist when
	// absent).
	ReadVersion(ctx context.Context, name string) (data []byte, generation int64, err error)
	// WriteVersion replaces the object if it is at generation ifGeneration,
	// or creates it if ifGeneration is 0 and it does not exist; otherwise
	// it fails with ErrPrecondition. It returns the new generation.
	WriteVersion(ctx context.Context, name string, data []byte, ifGeneration int64) (generation int64, err error)
	// DeleteVersion deletes the object if it is at generation ifGeneration
	// (ErrPrecondition otherwise, also when it is absent).
	DeleteVersion(ctx context.Context, name string, ifGeneration int64) error
	// Stat returns an object's generation and size (ErrNotExist when
	// absent). Objects made by Create have generations too.
	Stat(ctx context.Context, name string) (generation, size int64, err error)
	// Copy creates dst with the content of src, as Create would (ErrExist
	// if dst exists): a hard link on a directory, a server-side copy on GCS.
	Copy(ctx context.Context, src, dst string) error
	// Compose creates dst with the contents of srcs one after the other,
	// as Create would (ErrExist if dst exists; nothing on failure), without
	// the bytes passing through this process: copied by the kernel on a
	// directory, composed by the server on GCS.
	Compose(ctx context.Context, dst string, srcs []string) error
}

// Writer is an object being written.
type Writer interface {
	io.Writer
	Close() error // commit
	Abort()       // discard; after Close, nothing (a deferred Abort is safe)
}

// Open opens a root: a local directory path, file://path, or gs://bucket/prefix
// (when the GCS backend is linked in).
func Open(ctx context.Context, root string) (Bucket, error) {
	switch {
	case strings.HasPrefix(root, "gs://"):
		if openGCS == nil {
			return nil, fmt.Errorf("blob: %s: GCS support is not built in", root)
		}
		return openGCS(ctx, root)
	case strings.HasPrefix(root, "file://"):
		return OpenDir(strings.TrimPrefix(root, "file://"))
	case strings.Contains(root, "://"):
		return nil, fmt.Errorf("blob: unsupported root %q (a directory or gs://bucket/prefix)", root)
	}
	return OpenDir(root)
}

// openGCS is set by the GCS backend.
var openGCS func(ctx context.Context, root string) (Bucket, error)

// Dir is a Bucket on a local directory.
type Dir struct{ root string }

var _ Bucket = (*Dir)(nil)

// OpenDir opens (and creates) a local directory as a bucket.
func OpenDir(dir string) (*Dir, error) {
	if dir == "" {
		return nil, errors.New("blob: empty directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &Dir{root: abs}, nil
}

// Root returns the directory.
func (d *Dir) Root() string { return d.root }

func (d *Dir) path(name string) (string, error) {
	clean := path.Clean("/" + name)[1:]
	if clean == "" || clean != name || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("blob: invalid object name %q", name)
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

type dirWriter struct {
	f      *os.File
	target string
	name   string
	done   bool
}

// Create writes to a temporary file in the target directory and links it
// into place at Close (link fails if the target exists: no overwrite).
func (d *Dir) Create(_ context.Context, name string) (Writer, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(p); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExist, name)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("blob: create %s: %w", name, err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return nil, fmt.Errorf("blob: create %s: %w", name, err)
	}
	return &dirWriter{f: f, target: p, name: name}, nil
}

func (w *dirWriter) Write(b []byte) (int, error) { return w.f.Write(b) }

func (w *dirWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	tmp := w.f.Name()
	defer os.Remove(tmp)
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return fmt.Errorf("blob: write %s: %w", w.name, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("blob: write %s: %w", w.name, err)
	}
	if err := os.Link(tmp, w.target); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExist, w.name)
		}
		return fmt.Errorf("blob: publish %s: %w", w.name, err)
	}
	if dir, err := os.Open(filepath.Dir(w.target)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

func (w *dirWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// Open opens an object for reading.
func (d *Dir) Open(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotExist, name)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", name, err)
	}
	return f, nil
}

// Exists reports whether an object exists.
func (d *Dir) Exists(_ context.Context, name string) (bool, error) {
	p, err := d.path(name)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// List walks the directory of prefix and returns matching object names.
func (d *Dir) List(_ context.Context, prefix string) ([]string, error) {
	base := prefix
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[:i]
	} else {
		base = ""
	}
	start := d.root
	if base != "" {
		start = filepath.Join(d.root, filepath.FromSlash(base))
	}
	var names []string
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || hidden(e.Name()) {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		n := filepath.ToSlash(rel)
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blob: list %s: %w", prefix, err)
	}
	slices.Sort(names)
	return names, nil
}

// Delete removes an object.
func (d *Dir) Delete(_ context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: delete %s: %w", name, err)
	}
	return nil
}

// Creator and Opener are the halves of a Bucket that WriteAll and ReadAll
// need (consumers may declare narrower interfaces than Bucket).
type (
	Creator interface {
		Create(ctx context.Context, name string) (Writer, error)
	}
	Opener interface {
		Open(ctx context.Context, name string) (io.ReadCloser, error)
	}
)

// WriteAll creates name with data.
func WriteAll(ctx context.Context, b Creator, name string, data []byte) error {
	w, err := b.Create(ctx, name)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return fmt.Errorf("blob: write %s: %w", name, err)
	}
	return w.Close()
}

// ReadAll reads a whole object.
func ReadAll(ctx context.Context, b Opener, name string) ([]byte, error) {
	r, err := b.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("blob: read %s: %w", name, err)
	}
	return data, nil
}
