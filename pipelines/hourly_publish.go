package pipelines

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
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
	names, err := dataset.PartObjects(ctx, b, dir)
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
		if err := dataset.DeleteLeftover(ctx, b, n); err != nil {
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

// shardAccounting sums the shards' stats objects (every shard must have
// reported). It returns the stats by the dataset file each shard wrote.
func shardAccounting(ctx context.Context, b blob.Bucket, cfg HourlyConfig, part string, acc *layout.Accounting) (map[string]transforms.ShardStats, error) {
	names, err := b.List(ctx, layout.StatsDir(cfg.RunID, cfg.Type, cfg.Version, cfg.Hour, part))
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
	// With more than transforms.DirectShards shards, a shard that got no
	// record never runs and reports nothing: fewer reports than shards is
	// normal for a small hour.
	return written, nil
}

// buildManifest builds the manifest of a part from its accounting and
// what its files hold as stored (dataset.CheckFiles: written, by base
// name, is what the shards reported writing; nil decodes every file).
func buildManifest(ctx context.Context, b blob.Bucket, cfg HourlyConfig, part string, acc layout.Accounting, inputHours []string, written map[string]transforms.ShardStats) (*layout.ManifestDoc, error) {
	s, _, err := dataset.Schema(cfg.Type, cfg.Version)
	if err != nil {
		return nil, err
	}
	var w map[string]dataset.Written
	if written != nil {
		w = make(map[string]dataset.Written, len(written))
		for base, st := range written {
			w[base] = dataset.Written{SHA256: st.SHA256, Records: st.Published}
		}
	}
	files, records, err := dataset.CheckFiles(ctx, b, layout.Hour{Type: cfg.Type, Version: cfg.Version, Hour: cfg.Hour}, part, w)
	if err != nil {
		return nil, fmt.Errorf("pipelines: %w", err)
	}
	return &layout.ManifestDoc{
		FormatVersion: layout.ManifestFormatVersion, EventType: cfg.Type, SchemaVersion: cfg.Version, Hour: layout.FormatHour(cfg.Hour),
		Part: part, SchemaFingerprint: s.Encrypted().Fingerprint, Input: acc, Files: files, Records: records,
		Lineage: layout.Lineage{InputHours: inputHours, CodeVersion: CodeVersion(), KeyScope: cfg.KeyScope},
	}, nil
}
