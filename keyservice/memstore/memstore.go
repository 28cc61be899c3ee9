package memstore

import (
	"context"
	"sync"
	"time"

	"github.com/lockstream/lockstream/keyservice"
)

// Store is an in-memory [keyservice.Store] for tests and demos. It is safe
// for concurrent use, and has hooks to inject faults and latency.
type Store struct {
	mu   sync.Mutex
	rows map[string]memRow
	// Fault, when set, is called before every operation ("get", "put",
	// "delete") with the first key; a non-nil error fails the operation.
	fault func(op, key string) error
	now   func() time.Time
}

type memRow struct {
	value []byte
	rev   uint64
}

var _ keyservice.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{rows: make(map[string]memRow), now: time.Now}
}

// SetFault installs (or with nil removes) a fault hook. The hook may sleep
// to add latency.
func (m *Store) SetFault(f func(op, key string) error) {
	m.mu.Lock()
	m.fault = f
	m.mu.Unlock()
}

func (m *Store) hook(op, key string) error {
	m.mu.Lock()
	f := m.fault
	m.mu.Unlock()
	if f != nil {
		return f(op, key)
	}
	return nil
}

// Get implements [keyservice.Store].
func (m *Store) Get(ctx context.Context, keys []string) ([]keyservice.Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		if err := m.hook("get", keys[0]); err != nil {
			return nil, err
		}
	}
	now := m.now()
	out := make([]keyservice.Item, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		r := m.rows[k]
		out[i] = keyservice.Item{Key: k, Value: clone(r.value), Rev: r.rev, ReadAt: now}
	}
	return out, nil
}

// Put implements [keyservice.Store].
func (m *Store) Put(ctx context.Context, key string, value []byte, rev uint64) (keyservice.Item, error) {
	if err := ctx.Err(); err != nil {
		return keyservice.Item{}, err
	}
	if err := m.hook("put", key); err != nil {
		return keyservice.Item{}, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rows[key]
	if r.rev != rev {
		return keyservice.Item{Key: key, Value: clone(r.value), Rev: r.rev, ReadAt: now}, keyservice.ErrConflict
	}
	nr := memRow{value: clone(value), rev: rev + 1}
	m.rows[key] = nr
	return keyservice.Item{Key: key, Value: clone(value), Rev: nr.rev, ReadAt: now}, nil
}

// Delete implements [keyservice.Store].
func (m *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.hook("delete", key); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.rows, key)
	m.mu.Unlock()
	return nil
}

// Close implements [keyservice.Store]; the data stays (a Store survives
// Close, which lets tests "restart" a service on the same data).
func (m *Store) Close() error { return nil }

// Len is the number of rows (tests).
func (m *Store) Len() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.rows) }

// Dump returns a copy of every row (tests: e.g. to prove no plaintext user
// id or key is stored).
func (m *Store) Dump() map[string][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]byte, len(m.rows))
	for k, r := range m.rows {
		out[k] = clone(r.value)
	}
	return out
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
