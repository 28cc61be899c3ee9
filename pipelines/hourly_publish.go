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
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

// Publishing a part: staged shard files copied into place under the
// lease, their accounting summed, the manifest built and checked.

// placeFiles copies the staged files to their final names and deletes every
// other object an unfinished attempt left in the part's directory. The
// part is not published (no _SUCCESS), so nothing there is visible; a
// leftover with the very bytes staged for its name is kept.
func (j *hourJob) placeFiles(ctx context.Context, written map[string]transforms.ShardStats) error {
	b, dir, staging := j.b, j.partDir(), j.staging()
	ours := map[string]bool{}
	for base, st := range written {
		ours[base] = true
		left, removed, err := placeFile(ctx, b, staging+base, dir+base, st.SHA256)
		if err != nil {
			return fmt.Errorf("pipelines: hourly %s %s: %w", j.hour, j.part, err)
		}
		j.res.Leftovers += left
		j.res.Removed += removed
	}
	names, err := partObjects(ctx, b, dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		base := path.Base(n)
		if ours[base] {
			continue
		}
		if base == layout.Success {
			return fmt.Errorf("pipelines: hourly %s %s: %s appeared while this run held the lease", j.hour, j.part, n)
		}
		if err := deleteLeftover(ctx, b, n); err != nil {
			return err
		}
		j.res.Leftovers++
		j.res.Removed++
	}
	if j.res.Leftovers > 0 {
		j.logf("hourly %s %s: %d objects of an unfinished earlier attempt found, %d removed", j.hour, j.part, j.res.Leftovers, j.res.Removed)
	}
	return nil
}

// placeFile copies staged to final. A final object that exists already is
// an unfinished attempt's: kept if its checksum is sha, else deleted (at
// the generation read) and copied again.
func placeFile(ctx context.Context, b blob.Bucket, staged, final, sha string) (leftovers, removed int, err error) {
	err = b.Copy(ctx, staged, final)
	if !errors.Is(err, blob.ErrExist) {
		return 0, 0, err
	}
	data, gen, err := b.ReadVersion(ctx, final)
	if err != nil {
		return 1, 0, err
	}
	if s := sha256.Sum256(data); hex.EncodeToString(s[:]) == sha {
		return 1, 0, nil
	}
	if err := b.DeleteVersion(ctx, final, gen); err != nil {
		return 1, 0, fmt.Errorf("remove leftover %s: %w", final, err)
	}
	return 1, 1, b.Copy(ctx, staged, final)
}

// deleteLeftover deletes an object at the generation it has now.
func deleteLeftover(ctx context.Context, b blob.Bucket, name string) error {
	gen, _, err := b.Stat(ctx, name)
	if errors.Is(err, blob.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := b.DeleteVersion(ctx, name, gen); err != nil {
		return fmt.Errorf("pipelines: remove leftover %s: %w", name, err)
	}
	return nil
}

// createReplacingLeftover creates name, in a part's directory; one that
// exists is an unfinished attempt's (the part has no _SUCCESS yet):
// deleted at its generation, then created again.
func createReplacingLeftover(ctx context.Context, b blob.Bucket, name string, data []byte) error {
	err := blob.WriteAll(ctx, b, name, data)
	if !errors.Is(err, blob.ErrExist) {
		return err
	}
	if ok, err := b.Exists(ctx, path.Dir(name)+"/"+layout.Success); err != nil || ok {
		return fmt.Errorf("pipelines: %s exists, and the part is published (%v)", name, err)
	}
	if err := deleteLeftover(ctx, b, name); err != nil {
		return err
	}
	return blob.WriteAll(ctx, b, name, data)
}

// partObjects lists the objects directly in a part's directory (a main
// part's directory also holds the supplements' directories).
func partObjects(ctx context.Context, b blob.Bucket, dir string) ([]string, error) {
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

// shardAccounting sums the shards' stats objects (every shard must have
// reported). It returns the stats by the dataset file each shard wrote.
func shardAccounting(ctx context.Context, b blob.Bucket, cfg HourlyConfig, part string, acc *layout.Accounting) (map[string]transforms.ShardStats, error) {
	names, err := b.List(ctx, transforms.StatsDir(cfg.RunID, cfg.Type, cfg.Version, cfg.Hour, part))
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
		if seen[st.Shard] || st.Shard < 0 || st.Shard >= cfg.Shards {
			return nil, fmt.Errorf("pipelines: %s: shard %d reported twice or out of range", n, st.Shard)
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
	// A shard that got no record never runs and reports nothing: fewer
	// reports than shards is normal for a small hour.
	return written, nil
}

// buildManifest reads back every dataset file of a part: count, size,
// checksum. A file whose shard reported the checksum of what it wrote
// (written) must be stored with exactly those bytes, and is counted from
// its block headers; with written nil, every file is decoded record by
// record. With written set, the part's directory must hold exactly the
// files written.
func buildManifest(ctx context.Context, b blob.Bucket, cfg HourlyConfig, part string, acc layout.Accounting, inputHours []string, written map[string]transforms.ShardStats) (*layout.ManifestDoc, error) {
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
	dir := layout.PartDir(cfg.Type, cfg.Version, cfg.Hour, part)
	all, err := partObjects(ctx, b, dir)
	if err != nil {
		return nil, err
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
				return nil, fmt.Errorf("pipelines: verify %s: not written by this run", n)
			}
			found[path.Base(n)] = true
		}
		for base := range written {
			if !found[base] {
				return nil, fmt.Errorf("pipelines: verify %s%s: missing", dir, base)
			}
		}
	}
	m := &layout.ManifestDoc{
		FormatVersion: layout.ManifestFormatVersion, EventType: cfg.Type, SchemaVersion: cfg.Version, Hour: layout.FormatHour(cfg.Hour),
		Part: part, SchemaFingerprint: s.Encrypted().Fingerprint, Input: acc, Files: []layout.ManifestFile{},
		Lineage: layout.Lineage{InputHours: inputHours, CodeVersion: CodeVersion(), KeyScope: cfg.KeyScope},
	}
	// Every file is read back and decoded: on all cores, as the files
	// are independent. Each goroutine fills its own slot.
	files := make([]layout.ManifestFile, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, n := range names {
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
		m.Files = append(m.Files, f)
		m.Records += f.Records
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
