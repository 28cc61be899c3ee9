package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// PublishPart makes a part visible: it writes m as the _MANIFEST.json of
// the part's directory dir, then its _SUCCESS, re-checking the lease right
// before each write, so that a holder that lost its lease cannot publish.
// A manifest an unfinished attempt left is replaced (the part has no
// _SUCCESS yet). A _SUCCESS found already is accepted only when the
// manifest there is m's run's and publication time: on GCS, a retried
// create whose first attempt took effect finds its own object.
func PublishPart(ctx context.Context, b blob.Bucket, l *Lease, dir string, m *layout.ManifestDoc) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := l.Check(ctx); err != nil {
		return fmt.Errorf("not writing %s: %w", layout.Manifest, err)
	}
	if err := createReplacingLeftover(ctx, b, dir+layout.Manifest, append(data, '\n')); err != nil {
		return err
	}
	if err := l.Check(ctx); err != nil {
		return fmt.Errorf("not writing %s: %w", layout.Success, err)
	}
	err = blob.WriteAll(ctx, b, dir+layout.Success, nil)
	if !errors.Is(err, blob.ErrExist) {
		return err
	}
	if got, rerr := ReadManifest(ctx, b, dir); rerr != nil || got.RunID != m.RunID || !got.PublishedAt.Equal(m.PublishedAt) {
		return fmt.Errorf("%w (and the manifest is not this run's)", err)
	}
	return nil
}

// DeleteLeftover deletes an object of an unpublished part at the
// generation it has now: what an unfinished attempt left.
func DeleteLeftover(ctx context.Context, b blob.Bucket, name string) error {
	gen, _, err := b.Stat(ctx, name)
	if errors.Is(err, blob.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := b.DeleteVersion(ctx, name, gen); err != nil {
		return fmt.Errorf("dataset: remove leftover %s: %w", name, err)
	}
	return nil
}

// createReplacingLeftover creates name in a part's directory; one that
// exists is an unfinished attempt's (the part has no _SUCCESS yet):
// deleted at its generation, then created again.
func createReplacingLeftover(ctx context.Context, b blob.Bucket, name string, data []byte) error {
	err := blob.WriteAll(ctx, b, name, data)
	if !errors.Is(err, blob.ErrExist) {
		return err
	}
	if ok, err := b.Exists(ctx, path.Dir(name)+"/"+layout.Success); err != nil || ok {
		return fmt.Errorf("dataset: %s exists, and the part is published (%v)", name, err)
	}
	if err := DeleteLeftover(ctx, b, name); err != nil {
		return err
	}
	return blob.WriteAll(ctx, b, name, data)
}
