package blob

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"

	"cloud.google.com/go/storage"
)

// Versioned objects on GCS use the object generation and GCS's own
// preconditions (ifGenerationMatch; 0 for "does not exist"), which make
// every call idempotent and so retried by the client.

// ReadVersion reads an object and the generation read.
func (g *GCS) ReadVersion(ctx context.Context, name string) ([]byte, int64, error) {
	o, err := g.object(name)
	if err != nil {
		return nil, 0, err
	}
	r, err := o.NewReader(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotExist, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob: open %s: %w", name, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, 0, fmt.Errorf("blob: read %s: %w", name, err)
	}
	return data, r.Attrs.Generation, nil
}

// WriteVersion replaces (or creates) an object under a generation
// precondition.
func (g *GCS) WriteVersion(ctx context.Context, name string, data []byte, ifGeneration int64) (int64, error) {
	o, err := g.object(name)
	if err != nil {
		return 0, err
	}
	cond := storage.Conditions{GenerationMatch: ifGeneration}
	if ifGeneration == 0 {
		cond = storage.Conditions{DoesNotExist: true}
	}
	uctx, cancel := context.WithTimeout(ctx, g.uploadDeadline(int64(len(data))))
	defer cancel()
	w := o.If(cond).NewWriter(uctx)
	// One request that the client retries (ChunkSize 0 would disable
	// retries): buffered, as the object is smaller than a chunk.
	w.ChunkSize = len(data) + 1
	w.SendCRC32C = true
	w.CRC32C = crc32.Checksum(data, crc32cTable)
	if _, err := w.Write(data); err != nil {
		w.Close()
		return 0, fmt.Errorf("blob: write %s: %w", name, err)
	}
	if err := w.Close(); err != nil {
		if isStatus(err, http.StatusPreconditionFailed) {
			// Also what a retried request whose first attempt succeeded
			// sees: the caller re-reads and finds its own content.
			return 0, fmt.Errorf("%w: %s", ErrPrecondition, name)
		}
		return 0, fmt.Errorf("blob: write %s: %w", name, err)
	}
	return w.Attrs().Generation, nil
}

// DeleteVersion deletes one generation of an object.
func (g *GCS) DeleteVersion(ctx context.Context, name string, ifGeneration int64) error {
	o, err := g.object(name)
	if err != nil {
		return err
	}
	if ifGeneration <= 0 {
		return fmt.Errorf("%w: %s: no generation given", ErrPrecondition, name)
	}
	err = o.If(storage.Conditions{GenerationMatch: ifGeneration}).Delete(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrObjectNotExist), isStatus(err, http.StatusPreconditionFailed):
		return fmt.Errorf("%w: %s", ErrPrecondition, name)
	}
	return fmt.Errorf("blob: delete %s: %w", name, err)
}

// Stat returns an object's generation and size.
func (g *GCS) Stat(ctx context.Context, name string) (int64, int64, error) {
	o, err := g.object(name)
	if err != nil {
		return 0, 0, err
	}
	a, err := o.Attrs(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return 0, 0, fmt.Errorf("%w: %s", ErrNotExist, name)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("blob: stat %s: %w", name, err)
	}
	return a.Generation, a.Size, nil
}

// maxCompose is the most sources one GCS compose request takes.
const maxCompose = 32

// Compose composes dst from srcs on the server. More than maxCompose
// sources are composed in rounds, through temporary objects named after
// dst, removed at the end (GCS caps a composite object at 1024 source
// objects in all).
func (g *GCS) Compose(ctx context.Context, dst string, srcs []string) error {
	if len(srcs) == 0 { // GCS composes from 1 to 32 sources
		return WriteAll(ctx, g, dst, nil)
	}
	var temps []string
	defer func() {
		for _, t := range temps {
			g.Delete(context.WithoutCancel(ctx), t)
		}
	}()
	tok := newWriterToken()[:12] // names this call's temporary objects
	for round := 0; len(srcs) > maxCompose; round++ {
		var next []string
		for i := 0; i < len(srcs); i += maxCompose {
			t := fmt.Sprintf("%s.compose-%s-%d-%d", dst, tok, round, i/maxCompose)
			temps = append(temps, t)
			if err := g.compose(ctx, t, srcs[i:min(i+maxCompose, len(srcs))]); err != nil {
				return err
			}
			next = append(next, t)
		}
		srcs = next
	}
	return g.compose(ctx, dst, srcs)
}

// compose is one compose request: dst, if it does not exist, from at most
// maxCompose srcs.
func (g *GCS) compose(ctx context.Context, dst string, srcs []string) error {
	d, err := g.object(dst)
	if err != nil {
		return err
	}
	hs := make([]*storage.ObjectHandle, len(srcs))
	for i, src := range srcs {
		if hs[i], err = g.object(src); err != nil {
			return err
		}
	}
	// The token recognises our own object when a retried compose is
	// refused because an attempt whose response was lost did succeed (as
	// gcsWriter.Close does).
	token := newWriterToken()
	c := d.If(storage.Conditions{DoesNotExist: true}).ComposerFrom(hs...)
	c.ObjectAttrs.Metadata = map[string]string{writerTokenKey: token}
	_, err = c.Run(ctx)
	if err != nil && ctx.Err() == nil {
		if _, ok := writtenBy(ctx, d, token); ok {
			return nil
		}
	}
	switch {
	case err == nil:
		return nil
	case isStatus(err, http.StatusPreconditionFailed):
		return fmt.Errorf("%w: %s", ErrExist, dst)
	case errors.Is(err, storage.ErrObjectNotExist) || isStatus(err, http.StatusNotFound):
		return fmt.Errorf("%w: a source of %s", ErrNotExist, dst)
	}
	return fmt.Errorf("blob: compose %s: %w", dst, err)
}

// Copy copies src to dst on the server, only if dst does not exist.
func (g *GCS) Copy(ctx context.Context, src, dst string) error {
	s, err := g.object(src)
	if err != nil {
		return err
	}
	d, err := g.object(dst)
	if err != nil {
		return err
	}
	_, err = d.If(storage.Conditions{DoesNotExist: true}).CopierFrom(s).Run(ctx)
	switch {
	case err == nil:
		return nil
	case isStatus(err, http.StatusPreconditionFailed):
		return fmt.Errorf("%w: %s", ErrExist, dst)
	case errors.Is(err, storage.ErrObjectNotExist):
		return fmt.Errorf("%w: %s", ErrNotExist, src)
	}
	return fmt.Errorf("blob: copy %s to %s: %w", src, dst, err)
}
