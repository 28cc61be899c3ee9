package dataset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// Part is one published part of an hour.
type Part struct {
	Name     string // layout.MainPart or layout.SupplementPart(n)
	Dir      string // its directory, root-relative, ending in "/"
	Manifest *layout.ManifestDoc
}

// Hour is what is published of one (type, version, hour).
type Hour struct {
	layout.Hour
	Parts []Part // main first, then supplements in order
}

// Published reports whether the hour's main part is published.
func (h *Hour) Published() bool { return len(h.Parts) > 0 && h.Parts[0].Name == layout.MainPart }

// Supplements is the number of published supplements.
func (h *Hour) Supplements() int {
	if !h.Published() {
		return 0
	}
	return len(h.Parts) - 1
}

// Records is the number of records of every part.
func (h *Hour) Records() int64 {
	var n int64
	for _, p := range h.Parts {
		n += p.Manifest.Records
	}
	return n
}

// File is one data file of a published part.
type File struct {
	Name    string // root-relative
	Part    string
	Records int64
	Bytes   int64
	SHA256  string
}

// Files lists the data files of every part, in order.
func (h *Hour) Files() []File {
	var out []File
	for _, p := range h.Parts {
		for _, f := range p.Manifest.Files {
			out = append(out, File{Name: p.Dir + f.Name, Part: p.Name, Records: f.Records, Bytes: f.Bytes, SHA256: f.SHA256})
		}
	}
	return out
}

// Consumed is the set of raw and late part files the published parts
// consumed. ok is false when a part's manifest (format 1) does not say.
func (h *Hour) Consumed() (set map[string]bool, ok bool) {
	set = map[string]bool{}
	ok = true
	for _, p := range h.Parts {
		if p.Manifest.FormatVersion < 2 {
			ok = false
		}
		for _, n := range p.Manifest.Parts {
			set[n] = true
		}
	}
	return set, ok
}

// ReadManifest reads the _MANIFEST.json of the part in dir (root-relative,
// ending in "/"); it does not look at _SUCCESS.
func ReadManifest(ctx context.Context, b blob.Opener, dir string) (*layout.ManifestDoc, error) {
	data, err := blob.ReadAll(ctx, b, dir+layout.Manifest)
	if err != nil {
		return nil, err
	}
	var m layout.ManifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", dir+layout.Manifest, err)
	}
	return &m, nil
}

// Read returns the published parts of h (none when nothing is published).
func Read(ctx context.Context, b blob.Bucket, h layout.Hour) (*Hour, error) {
	h.Hour = h.Hour.UTC()
	out := &Hour{Hour: h}
	dir := layout.DatasetDir(h.Type, h.Version, h.Hour)
	names, err := b.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, n := range names {
		rel := strings.TrimPrefix(n, dir)
		switch {
		case rel == layout.Success:
			parts = append(parts, layout.MainPart)
		case strings.HasSuffix(rel, "/"+layout.Success):
			p := strings.TrimSuffix(rel, "/"+layout.Success)
			if _, ok := layout.ParseSupplementPart(p); ok {
				parts = append(parts, p)
			}
		}
	}
	if !containsMain(parts) {
		return out, nil // supplements count only once the main part is out
	}
	sort.Slice(parts, func(i, j int) bool { return partOrder(parts[i]) < partOrder(parts[j]) })
	out.Parts = make([]Part, len(parts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, p := range parts {
		g.Go(func() error {
			pd := layout.PartDir(h.Type, h.Version, h.Hour, p)
			m, err := ReadManifest(gctx, b, pd)
			if err != nil {
				return err
			}
			out.Parts[i] = Part{Name: p, Dir: pd, Manifest: m}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func containsMain(parts []string) bool {
	for _, p := range parts {
		if p == layout.MainPart {
			return true
		}
	}
	return false
}

func partOrder(p string) int {
	if n, ok := layout.ParseSupplementPart(p); ok {
		return n
	}
	return 0
}

// ErrNotPublished is returned by ReadPublished when the hour's main part
// is not published.
var ErrNotPublished = errors.New("dataset: hour not published")

// ReadPublished is Read for an hour that must be published.
func ReadPublished(ctx context.Context, b blob.Bucket, h layout.Hour) (*Hour, error) {
	out, err := Read(ctx, b, h)
	if err != nil {
		return nil, err
	}
	if !out.Published() {
		return nil, fmt.Errorf("%w: %s (no %s)", ErrNotPublished, h, layout.DatasetDir(h.Type, h.Version, h.Hour)+layout.Success)
	}
	return out, nil
}

// InputParts lists the raw and late part files of an hour, root-relative,
// sorted.
func InputParts(ctx context.Context, b blob.Bucket, h layout.Hour) ([]string, error) {
	var out []string
	for _, d := range []string{layout.RawDir(h.Type, h.Version, h.Hour), layout.LateDir(h.Type, h.Version, h.Hour)} {
		names, err := b.List(ctx, d)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if IsPartFile(n) {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// IsPartFile reports whether an object name (under raw/ or late/) is a
// part file written by ingest.
func IsPartFile(name string) bool {
	base := path.Base(name)
	return strings.HasPrefix(base, "part-") && strings.HasSuffix(base, ".avro")
}

// Pending returns the part files of a published hour that no part
// consumed: the input of its next supplement. An hour whose main part has
// a format-1 manifest (written before manifests listed their parts) has
// none: what that part read is not known.
func Pending(ctx context.Context, b blob.Bucket, h *Hour) ([]string, error) {
	if !h.Published() {
		return nil, nil
	}
	consumed, known := h.Consumed()
	if !known {
		return nil, nil
	}
	all, err := InputParts(ctx, b, h.Hour)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range all {
		if !consumed[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// Verify re-reads every file of every part and checks its size and
// checksum against the manifest.
func Verify(ctx context.Context, b blob.Bucket, h *Hour) error {
	for _, f := range h.Files() {
		data, err := blob.ReadAll(ctx, b, f.Name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if int64(len(data)) != f.Bytes || hex.EncodeToString(sum[:]) != f.SHA256 {
			return fmt.Errorf("dataset: %s does not match its manifest (%d bytes, sha256 %s; manifest %d, %s)",
				f.Name, len(data), hex.EncodeToString(sum[:]), f.Bytes, f.SHA256)
		}
	}
	return nil
}

// Neighbours returns the published hours of (type, version) within
// lookback before and, when after is set, after h, nearest first.
func Neighbours(ctx context.Context, b blob.Bucket, h layout.Hour, lookback time.Duration, after bool) ([]*Hour, error) {
	var out []*Hour
	for back := time.Hour; lookback > 0 && back <= lookback; back += time.Hour {
		offsets := []time.Duration{-back}
		if after {
			offsets = append(offsets, back)
		}
		for _, off := range offsets {
			nh := layout.Hour{Type: h.Type, Version: h.Version, Hour: h.Hour.Add(off)}
			p, err := Read(ctx, b, nh)
			if err != nil {
				return nil, err
			}
			if p.Published() {
				out = append(out, p)
			}
		}
	}
	return out, nil
}
