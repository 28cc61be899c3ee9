package keyservice

import (
	"context"
	"sync"
	"time"
)

// MemoryStore is an in-memory [Store] for tests and demos. It is safe for
// concurrent use, and has hooks to inject faults and latency.
type MemoryStore struct {
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

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{rows: make(map[string]memRow), now: time.Now}
}

// SetFault installs (or with nil removes) a fault hook. The hook may sleep
// to add latency.
func (m *MemoryStore) SetFault(f func(op, key string) error) {
	m.mu.Lock()
	m.fault = f
	m.mu.Unlock()
}

func (m *MemoryStore) hook(op, key string) error {
	m.mu.Lock()
	f := m.fault
	m.mu.Unlock()
	if f != nil {
		return f(op, key)
	}
	return nil
}

// Get implements [Store].
func (m *MemoryStore) Get(ctx context.Context, keys []string) ([]Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		if err := m.hook("get", keys[0]); err != nil {
			return nil, err
		}
	}
	now := m.now()
	out := make([]Item, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		r := m.rows[k]
		out[i] = Item{Key: k, Value: clone(r.value), Rev: r.rev, ReadAt: now}
	}
	return out, nil
}

// Put implements [Store].
func (m *MemoryStore) Put(ctx context.Context, key string, value []byte, rev uint64) (Item, error) {
	if err := ctx.Err(); err != nil {
		return Item{}, err
	}
	if err := m.hook("put", key); err != nil {
		return Item{}, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rows[key]
	if r.rev != rev {
		return Item{Key: key, Value: clone(r.value), Rev: r.rev, ReadAt: now}, ErrConflict
	}
	nr := memRow{value: clone(value), rev: rev + 1}
	m.rows[key] = nr
	return Item{Key: key, Value: clone(value), Rev: nr.rev, ReadAt: now}, nil
}

// Delete implements [Store].
func (m *MemoryStore) Delete(ctx context.Context, key string) error {
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

// Close implements [Store]; the data stays (a MemoryStore survives Close,
// which lets tests "restart" a service on the same data).
func (m *MemoryStore) Close() error { return nil }

// Len is the number of rows (tests).
func (m *MemoryStore) Len() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.rows) }

// Dump returns a copy of every row (tests: e.g. to prove no plaintext user
// id or key is stored).
func (m *MemoryStore) Dump() map[string][]byte {
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
