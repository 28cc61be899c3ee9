package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lockstream/lockstream/keyservice"
)

// Store is the embedded [keyservice.Store] (the default): one bbolt file,
// DIR/keyservice.db, pure Go, zero setup, durable across restarts (every
// write is fsynced; concurrent writes are coalesced into one transaction).
// Only one process may open a directory at a time.
type Store struct {
	dir string
	db  *bolt.DB
	now func() time.Time
	// writes counts completed Puts and Deletes by group of keys (a hash of
	// the key picks the group): see keyservice.LocalWriter.
	writes *[boltWriteGroups]atomic.Uint64
	seed   maphash.Seed
}

var _ keyservice.LocalWriter = (*Store)(nil)

// boltWriteGroups is the number of write counters (a power of two): a write
// makes the cached rows of ~1/4096 of the keys read again.
const boltWriteGroups = 4096

// Writes implements [keyservice.LocalWriter].
func (b *Store) Writes(key string) uint64 {
	return b.group(key).Load() + 1
}

func (b *Store) group(key string) *atomic.Uint64 {
	return &b.writes[maphash.String(b.seed, key)&(boltWriteGroups-1)]
}

var boltBucket = []byte("keyservice/v1")

// File is the file name inside the directory given to Open.
const File = "keyservice.db"

// Open opens (creating if needed) the store in dir. It waits at most 5 s
// for another process holding the file.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: bolt store: empty directory", keyservice.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keyservice: bolt store: %w", err)
	}
	path := filepath.Join(dir, File)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("keyservice: bolt store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("keyservice: bolt store %s: %w", path, err)
	}
	db.MaxBatchDelay = 2 * time.Millisecond
	return &Store{dir: dir, db: db, now: time.Now, writes: new([boltWriteGroups]atomic.Uint64), seed: maphash.MakeSeed()}, nil
}

// Dir is the directory the store was opened in.
func (b *Store) Dir() string { return b.dir }

// Stored value: 8-byte big-endian revision | value.

// Get implements [keyservice.Store].
func (b *Store) Get(ctx context.Context, keys []string) ([]keyservice.Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]keyservice.Item, len(keys))
	for i, k := range keys {
		out[i].Writes = b.Writes(k) // before the read: a write racing with it makes the count differ later
	}
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		now := b.now()
		for i, k := range keys {
			out[i] = keyservice.Item{Key: k, ReadAt: now, Writes: out[i].Writes}
			v := bk.Get([]byte(k))
			if len(v) < 8 {
				continue
			}
			out[i].Rev = binary.BigEndian.Uint64(v)
			out[i].Value = append([]byte{}, v[8:]...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keyservice: bolt get: %w", err)
	}
	return out, nil
}

// Put implements [keyservice.Store].
func (b *Store) Put(ctx context.Context, key string, value []byte, rev uint64) (keyservice.Item, error) {
	if err := ctx.Err(); err != nil {
		return keyservice.Item{}, err
	}
	var it keyservice.Item
	var conflict bool
	// The written Item carries the count from before this write: it makes
	// a cache read the row once more, and never miss a racing write.
	writes := b.Writes(key)
	defer b.group(key).Add(1) // after the commit (or a failure: counting one more is harmless)
	err := b.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		it, conflict = keyservice.Item{Key: key, ReadAt: b.now(), Writes: writes}, false
		cur := bk.Get([]byte(key))
		var curRev uint64
		if len(cur) >= 8 {
			curRev = binary.BigEndian.Uint64(cur)
		}
		if curRev != rev {
			conflict = true
			if curRev != 0 {
				it.Rev, it.Value = curRev, append([]byte{}, cur[8:]...)
			}
			return nil
		}
		nv := make([]byte, 8+len(value))
		binary.BigEndian.PutUint64(nv, rev+1)
		copy(nv[8:], value)
		it.Rev, it.Value = rev+1, append([]byte{}, value...)
		return bk.Put([]byte(key), nv)
	})
	if err != nil {
		return keyservice.Item{}, fmt.Errorf("keyservice: bolt put: %w", err)
	}
	if conflict {
		return it, keyservice.ErrConflict
	}
	return it, nil
}

// Delete implements [keyservice.Store].
func (b *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer b.group(key).Add(1)
	err := b.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("keyservice: bolt delete: %w", err)
	}
	return nil
}

// Close implements [keyservice.Store].
func (b *Store) Close() error {
	if err := b.db.Close(); err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return err
	}
	return nil
}
