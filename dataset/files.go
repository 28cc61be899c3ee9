package dataset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
)

// PartObjects lists the objects directly in a part's directory (a main
// part's directory also holds the supplements' directories).
func PartObjects(ctx context.Context, b blob.Bucket, dir string) ([]string, error) {
	names, err := b.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !strings.Contains(strings.TrimPrefix(n, dir), "/") {
			out = append(out, n)
		}
	}
	return out, nil
}

// Written is what the writer of a dataset file reported of it: the
// checksum of the bytes it wrote and their records.
type Written struct {
	SHA256  string
	Records int64
}

// CheckFiles reads back every dataset file of a part about to be
// published and returns the manifest's entries for them (sorted by name)
// and their records: count, size and checksum of the stored bytes. This is
// the one read-back of a publication, and what proves that the bytes
// stored are those written. A file in written must be stored with exactly
// the bytes its writer hashed, and is counted from its block headers; a
// file not in it is decoded record by record. With written non-nil, the
// part's directory must hold exactly the files written.
func CheckFiles(ctx context.Context, b blob.Bucket, h layout.Hour, part string, written map[string]Written) ([]layout.ManifestFile, int64, error) {
	_, lay, err := Schema(h.Type, h.Version)
	if err != nil {
		return nil, 0, err
	}
	dir := layout.PartDir(h.Type, h.Version, h.Hour, part)
	all, err := PartObjects(ctx, b, dir)
	if err != nil {
		return nil, 0, err
	}
	var names []string
	for _, n := range all {
		if strings.HasSuffix(n, ".avro") {
			names = append(names, n)
		}
	}
	if written != nil {
		found := map[string]bool{}
		for _, n := range names {
			if _, ok := written[path.Base(n)]; !ok {
				return nil, 0, fmt.Errorf("dataset: verify %s: not written by this run", n)
			}
			found[path.Base(n)] = true
		}
		for base := range written {
			if !found[base] {
				return nil, 0, fmt.Errorf("dataset: verify %s%s: missing", dir, base)
			}
		}
	}
	// The files are independent: read on all cores, each goroutine into
	// its own slot.
	files := make([]layout.ManifestFile, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, n := range names {
		g.Go(func() error {
			f, err := checkFile(gctx, b, n, lay, written)
			files[i] = f
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var records int64
	for _, f := range files {
		records += f.Records
	}
	return files, records, nil
}

func checkFile(ctx context.Context, b blob.Bucket, name string, lay *record.Layout, written map[string]Written) (layout.ManifestFile, error) {
	rc, err := b.Open(ctx, name)
	if err != nil {
		return layout.ManifestFile{}, err
	}
	defer rc.Close()
	// Hashed and counted as it is read, not held whole: a publication's
	// files are as big as its records.
	hash, size := sha256.New(), new(byteCount)
	in := io.TeeReader(rc, io.MultiWriter(hash, size))
	var count int64
	w, isWritten := written[path.Base(name)]
	if isWritten {
		if count, err = countBlocks(in); err == nil && count != w.Records {
			err = fmt.Errorf("%d records in its blocks, %d written", count, w.Records)
		}
	} else {
		count, err = countRecords(in, lay)
	}
	if _, rerr := io.Copy(io.Discard, in); rerr != nil { // the rest, hashed
		return layout.ManifestFile{}, rerr
	}
	sumHex := hex.EncodeToString(hash.Sum(nil))
	if isWritten && w.SHA256 != sumHex {
		return layout.ManifestFile{}, fmt.Errorf("dataset: verify %s: stored bytes (sha256 %s) differ from those written (sha256 %s)", name, sumHex, w.SHA256)
	}
	if err != nil {
		return layout.ManifestFile{}, fmt.Errorf("dataset: verify %s: %w", name, err)
	}
	return layout.ManifestFile{Name: path.Base(name), Records: count, Bytes: int64(*size), SHA256: sumHex}, nil
}

// byteCount counts the bytes written to it.
type byteCount int64

func (c *byteCount) Write(p []byte) (int, error) {
	*c += byteCount(len(p))
	return len(p), nil
}

// countBlocks counts a container file's records from its block headers.
func countBlocks(in io.Reader) (int64, error) {
	r, err := record.NewOCFReader(in, nil)
	if err != nil {
		return 0, err
	}
	return r.CountBlocks()
}

// countRecords counts a container file's records by decoding each.
func countRecords(in io.Reader, lay *record.Layout) (int64, error) {
	r, err := record.NewOCFReader(in, lay.Skip())
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
