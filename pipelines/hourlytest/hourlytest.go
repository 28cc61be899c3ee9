// Package hourlytest checks what hourly runs left under a root, for tests
// that run several of them at once (on a directory or on GCS).
package hourlytest

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
)

// Check checks the published hours given, after every hourly run ended:
//
//   - each is published: its main part has its _MANIFEST.json and _SUCCESS;
//   - every file of every part exists with the size and checksum its
//     manifest lists (nothing was deleted or rewritten), and a part's
//     directory holds nothing else (no second attempt's files);
//   - every event id appears once across the hours of its type;
//   - no publication lease and no staging object is left under the root.
//
// It returns the number of distinct event ids per type.
func Check(ctx context.Context, b blob.Bucket, hours []layout.Hour) (map[string]int, error) {
	seen := map[string]map[string]layout.Hour{} // type -> event id -> hour
	for _, h := range hours {
		d, err := dataset.ReadPublished(ctx, b, h)
		if err != nil {
			return nil, err
		}
		if err := dataset.Verify(ctx, b, d); err != nil {
			return nil, err
		}
		listed := map[string]bool{}
		for _, p := range d.Parts {
			listed[p.Dir+layout.Manifest], listed[p.Dir+layout.Success] = true, true
		}
		for _, f := range d.Files() {
			listed[f.Name] = true
		}
		names, err := b.List(ctx, layout.DatasetDir(h.Type, h.Version, h.Hour))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if !listed[n] {
				return nil, fmt.Errorf("%s: %s is in no published part", h, n)
			}
		}
		if seen[h.Type] == nil {
			seen[h.Type] = map[string]layout.Hour{}
		}
		var dup error
		err = pipelines.ReadDatasetEventIDs(ctx, b, h, func(id string) {
			if prev, ok := seen[h.Type][id]; ok && dup == nil {
				dup = fmt.Errorf("%s: event %s is published again (first in %s)", h, id, layout.FormatHour(prev.Hour))
			}
			seen[h.Type][id] = h
		})
		if err != nil {
			return nil, err
		}
		if dup != nil {
			return nil, dup
		}
	}
	for _, prefix := range []string{layout.LeasesArea + "/", layout.TmpArea + "/"} {
		names, err := b.List(ctx, prefix)
		if err != nil {
			return nil, err
		}
		if len(names) > 0 {
			return nil, fmt.Errorf("left behind under %s: %s", prefix, strings.Join(names, ", "))
		}
	}
	out := map[string]int{}
	for typ, ids := range seen {
		out[typ] = len(ids)
	}
	return out, nil
}

// Inputs lists the raw and late part files and completion markers under
// the root: what hourly reads and must never delete.
func Inputs(ctx context.Context, b blob.Bucket) ([]string, error) {
	var out []string
	for _, area := range []string{layout.RawArea, layout.LateArea} {
		names, err := b.List(ctx, area+"/")
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if dataset.IsPartFile(n) || path.Base(n) == layout.Complete {
				out = append(out, n)
			}
		}
	}
	return out, nil
}
