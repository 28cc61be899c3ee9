package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Versioned objects on a directory. A generation is the object's
// modification time in nanoseconds: every WriteVersion sets it explicitly
// to a value above the previous one (at least the current time), so it
// grows with every write; a file made by Create or Copy has the time the
// kernel gave it. Conditional operations on one name run under an
// exclusive flock(2) of a hidden lock file next to it (".lock-<base>",
// which List skips), so processes on this machine (and goroutines) see
// them as atomic. A write goes to a temporary file that is renamed into
// place: readers see the old or the new object, whole.

const lockPrefix = ".lock-"

func generationOf(fi os.FileInfo) int64 { return fi.ModTime().UnixNano() }

// withLock runs fn holding the lock of the object at p.
func withLock(p string, fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	lp := filepath.Join(filepath.Dir(p), lockPrefix+filepath.Base(p))
	f, err := os.OpenFile(lp, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// ReadVersion reads an object and its generation.
func (d *Dir) ReadVersion(_ context.Context, name string) ([]byte, int64, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotExist, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob: open %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat() // of the file read, whatever replaces it meanwhile
	if err != nil {
		return nil, 0, fmt.Errorf("blob: stat %s: %w", name, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, fmt.Errorf("blob: read %s: %w", name, err)
	}
	return data, generationOf(fi), nil
}

// WriteVersion replaces or creates an object under a generation
// precondition.
func (d *Dir) WriteVersion(_ context.Context, name string, data []byte, ifGeneration int64) (int64, error) {
	p, err := d.path(name)
	if err != nil {
		return 0, err
	}
	var gen int64
	err = withLock(p, func() error {
		var prev int64
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if ifGeneration != 0 {
				return fmt.Errorf("%w: %s is absent, not at generation %d", ErrPrecondition, name, ifGeneration)
			}
		case err != nil:
			return err
		default:
			prev = generationOf(fi)
			if ifGeneration != prev {
				return fmt.Errorf("%w: %s is at generation %d, not %d", ErrPrecondition, name, prev, ifGeneration)
			}
		}
		tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		if _, err := tmp.Write(data); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		gen = max(time.Now().UnixNano(), prev+1)
		t := time.Unix(0, gen)
		if err := os.Chtimes(tmp.Name(), t, t); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), p); err != nil {
			return err
		}
		syncDir(filepath.Dir(p))
		return nil
	})
	if err != nil && !errors.Is(err, ErrPrecondition) {
		return 0, fmt.Errorf("blob: write %s: %w", name, err)
	}
	return gen, err
}

// DeleteVersion deletes an object at a given generation.
func (d *Dir) DeleteVersion(_ context.Context, name string, ifGeneration int64) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	err = withLock(p, func() error {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s is absent", ErrPrecondition, name)
		}
		if err != nil {
			return err
		}
		if g := generationOf(fi); g != ifGeneration {
			return fmt.Errorf("%w: %s is at generation %d, not %d", ErrPrecondition, name, g, ifGeneration)
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		syncDir(filepath.Dir(p))
		return nil
	})
	if err != nil && !errors.Is(err, ErrPrecondition) {
		return fmt.Errorf("blob: delete %s: %w", name, err)
	}
	return err
}

// Stat returns an object's generation and size.
func (d *Dir) Stat(_ context.Context, name string) (int64, int64, error) {
	p, err := d.path(name)
	if err != nil {
		return 0, 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("%w: %s", ErrNotExist, name)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("blob: stat %s: %w", name, err)
	}
	return generationOf(fi), fi.Size(), nil
}

// Copy hard-links src to dst (dst must not exist).
func (d *Dir) Copy(_ context.Context, src, dst string) error {
	ps, err := d.path(src)
	if err != nil {
		return err
	}
	pd, err := d.path(dst)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(pd), 0o755); err != nil {
		return fmt.Errorf("blob: copy %s: %w", dst, err)
	}
	if err := os.Link(ps, pd); err != nil {
		switch {
		case errors.Is(err, fs.ErrExist):
			return fmt.Errorf("%w: %s", ErrExist, dst)
		case errors.Is(err, fs.ErrNotExist):
			if _, serr := os.Stat(ps); errors.Is(serr, fs.ErrNotExist) {
				return fmt.Errorf("%w: %s", ErrNotExist, src)
			}
		}
		return fmt.Errorf("blob: copy %s to %s: %w", src, dst, err)
	}
	syncDir(filepath.Dir(pd))
	return nil
}

// Compose concatenates srcs into dst: the file is written as Create writes
// it, each source copied into it by the kernel (copy_file_range).
func (d *Dir) Compose(ctx context.Context, dst string, srcs []string) error {
	w, err := d.Create(ctx, dst)
	if err != nil {
		return err
	}
	f := w.(*dirWriter).f
	for _, src := range srcs {
		p, err := d.path(src)
		if err == nil {
			err = appendFile(f, p)
		}
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %s", ErrNotExist, src)
		}
		if err != nil {
			w.Abort()
			return fmt.Errorf("blob: compose %s: %w", dst, err)
		}
	}
	return w.Close()
}

// appendFile appends the file at p to f.
func appendFile(f *os.File, p string) error {
	s, err := os.Open(p)
	if err != nil {
		return err
	}
	defer s.Close()
	_, err = f.ReadFrom(s)
	return err
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// hidden reports whether a directory entry is the package's own
// bookkeeping (temporary and lock files), not an object.
func hidden(base string) bool {
	return strings.HasPrefix(base, ".tmp-") || strings.HasPrefix(base, lockPrefix)
}
