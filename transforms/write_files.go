package transforms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
)

// The files of a batch: raw and late OCF files, dead letters, and which
// hours are closed.

// FileCodec is the block codec of the raw and dataset files lockstream
// writes (see record.CodecSnappy for the measurement behind it).
const FileCodec = record.CodecSnappy

// writeOCF writes one OCF file of pre-encoded records. With existingOK, a
// file of that name that exists already was written by an earlier attempt
// of the same batch (replay batch ids are a pure function of the input
// range; Create is atomic), so it counts as written. Without it (Pub/Sub
// batch ids are unique per pull), an existing file is an error: the batch
// must not be acknowledged as written.
func writeOCF(ctx context.Context, b blob.Bucket, name string, schemaJSON []byte, recs [][]byte, existingOK bool) error {
	w, err := b.Create(ctx, name)
	if errors.Is(err, blob.ErrExist) && existingOK {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transforms: create %s: %w", name, err)
	}
	ocf, err := record.NewOCFWriter(w, schemaJSON, record.SyncMarker(name), FileCodec)
	if err != nil {
		w.Abort()
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	for _, r := range recs {
		if err := ocf.Append(r); err != nil {
			w.Abort()
			return fmt.Errorf("transforms: %s: %w", name, err)
		}
	}
	if err := ocf.Close(); err != nil {
		w.Abort()
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	if err := w.Close(); err != nil && !(existingOK && errors.Is(err, blob.ErrExist)) {
		return fmt.Errorf("transforms: close %s: %w", name, err)
	}
	return nil
}

// writeDeadLetters writes rejections as NDJSON (record.Rejection holds no
// plaintext: payloads are sealed).
func writeDeadLetters(ctx context.Context, b blob.Bucket, name string, rs []*record.Rejection, existingOK bool) error {
	var buf []byte
	for _, r := range rs {
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("transforms: %s: %w", name, err)
		}
		buf = append(append(buf, line...), '\n')
	}
	err := blob.WriteAll(ctx, b, name, buf)
	if err != nil && !(existingOK && errors.Is(err, blob.ErrExist)) {
		return fmt.Errorf("transforms: %s: %w", name, err)
	}
	return nil
}

// closedCache remembers which hours have a _COMPLETE marker: a closed hour
// stays closed; an open one is re-checked after openRecheck. A batch that
// writes to raw/ just after its hour completed (the cache was stale) is not
// lost: the hour's next supplement publishes every part file no manifest
// lists.
type closedCache struct {
	mu   sync.Mutex
	hour map[HourKey3]time.Time // zero time: closed; else: open as of then
}

const openRecheck = 10 * time.Second

func (c *closedCache) isClosed(ctx context.Context, b blob.Bucket, typ string, v int, hour time.Time) (bool, error) {
	k := HourKey3{typ, v, hour.UnixMilli()}
	c.mu.Lock()
	t, ok := c.hour[k]
	c.mu.Unlock()
	if ok && (t.IsZero() || time.Since(t) < openRecheck) {
		return t.IsZero(), nil
	}
	closed, err := b.Exists(ctx, layout.CompleteName(typ, v, hour))
	if err != nil {
		return false, fmt.Errorf("transforms: %w", err)
	}
	c.mu.Lock()
	if closed {
		c.hour[k] = time.Time{}
	} else {
		c.hour[k] = time.Now()
	}
	c.mu.Unlock()
	return closed, nil
}
