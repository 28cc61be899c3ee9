package pipelines

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// Reading what hourly published or what waits for it: manifests, raw
// hours, pending supplements, event ids.

// readPublished is dataset.ReadPublished whose error for an unpublished
// hour is also blob.ErrNotExist (what callers of ReadManifest test).
func readPublished(ctx context.Context, b blob.Bucket, h layout.Hour) (*dataset.Hour, error) {
	d, err := dataset.ReadPublished(ctx, b, h)
	if errors.Is(err, dataset.ErrNotPublished) {
		return nil, fmt.Errorf("%w: %w", blob.ErrNotExist, err)
	}
	return d, err
}

// ReadManifest reads the manifest of a published hour's main part
// (blob.ErrNotExist when the hour is not published: no _SUCCESS).
// dataset.Read has every part, supplements included.
func ReadManifest(ctx context.Context, b blob.Bucket, h layout.Hour) (*layout.ManifestDoc, error) {
	d, err := readPublished(ctx, b, h)
	if err != nil {
		return nil, err
	}
	return d.Parts[0].Manifest, nil
}

// VerifyHour re-reads every file of every published part of an hour and
// checks it against its manifest (size, checksum).
func VerifyHour(ctx context.Context, b blob.Bucket, h layout.Hour) error {
	d, err := readPublished(ctx, b, h)
	if err != nil {
		return err
	}
	return dataset.Verify(ctx, b, d)
}

// RawHours lists the (type, version) pairs that have raw or late data for
// an hour (an hour may have late data only).
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

// PendingSupplements lists the published (type, version, hour)s with hours
// in [from, to) that have part files no published part consumed: each
// needs a supplement. In time order, then by type and version.
func PendingSupplements(ctx context.Context, b blob.Bucket, from, to time.Time) ([]layout.Hour, error) {
	reg, err := schemas.Embedded()
	if err != nil {
		return nil, err
	}
	var cands []layout.Hour
	for hr := from.UTC().Truncate(time.Hour); hr.Before(to); hr = hr.Add(time.Hour) {
		for _, t := range reg.Types() {
			for _, v := range reg.Versions(t) {
				cands = append(cands, layout.Hour{Type: t, Version: v, Hour: hr})
			}
		}
	}
	pending := make([]bool, len(cands))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, h := range cands {
		g.Go(func() error {
			d, err := dataset.Read(gctx, b, h)
			if err != nil || !d.Published() {
				return err
			}
			p, err := dataset.Pending(gctx, b, d)
			pending[i] = len(p) > 0
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []layout.Hour
	for i, h := range cands {
		if pending[i] {
			out = append(out, h)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Hour.Equal(out[j].Hour) {
			return out[i].Hour.Before(out[j].Hour)
		}
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Version < out[j].Version
	})
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
// published hour: its main part and every published supplement.
func ReadDatasetEventIDs(ctx context.Context, b blob.Bucket, h layout.Hour, fn func(id string)) error {
	d, err := readPublished(ctx, b, h)
	if err != nil {
		return err
	}
	var files []string
	for _, f := range d.Files() {
		files = append(files, f.Name)
	}
	return dataset.ReadRecords(ctx, b, h.Type, h.Version, files, func(cols []record.Column, lay *record.Layout, _ []byte) {
		fn(string(cols[lay.Dedupe].Bytes))
	})
}
