package bigtablestore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"cloud.google.com/go/bigtable"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lockstream/lockstream/keyservice"
)

// Store is a [keyservice.Store] on Cloud Bigtable (or its emulator, when
// BIGTABLE_EMULATOR_HOST is set). One row per key, column family "k" with
// two cells: "v" (the value) and "r" (the revision, decimal). Put is one
// CheckAndMutateRow: its predicate matches the expected revision (or, for
// rev 0, any existing cell) and its mutation deletes the old cells before
// writing, so concurrent creates and updates are idempotent and no old value
// stays readable (Bigtable purges deleted cells at its next compaction).
type Store struct {
	client *bigtable.Client
	tbl    *bigtable.Table
	table  string
	name   string
	now    func() time.Time
}

var _ keyservice.Store = (*Store)(nil)

const (
	btFamily = "k"
	btValue  = "v"
	btRev    = "r"
)

// Options configure Open.
type Options struct {
	// CreateTable creates the table and its column family (GC: keep one
	// version) with the admin API if they are missing.
	CreateTable bool
	// ClientOptions are passed to both clients (credentials, endpoint…).
	ClientOptions []option.ClientOption
}

// Open opens table in project/instance.
func Open(ctx context.Context, project, instance, table string, o Options) (*Store, error) {
	if project == "" || instance == "" || table == "" {
		return nil, fmt.Errorf("%w: bigtable store needs project, instance and table", keyservice.ErrInvalidArgument)
	}
	name := project + "/" + instance + "/" + table
	if o.CreateTable {
		if err := createBigtable(ctx, project, instance, table, o.ClientOptions); err != nil {
			return nil, fmt.Errorf("keyservice: bigtable %s: create table: %w", name, err)
		}
	}
	c, err := bigtable.NewClient(ctx, project, instance, o.ClientOptions...)
	if err != nil {
		return nil, fmt.Errorf("keyservice: bigtable %s: %w", name, err)
	}
	return &Store{client: c, tbl: c.Open(table), table: table, name: name, now: time.Now}, nil
}

func createBigtable(ctx context.Context, project, instance, table string, opts []option.ClientOption) error {
	ac, err := bigtable.NewAdminClient(ctx, project, instance, opts...)
	if err != nil {
		return err
	}
	defer ac.Close()
	if err := ac.CreateTable(ctx, table); err != nil && status.Code(err) != codes.AlreadyExists {
		return err
	}
	info, err := ac.TableInfo(ctx, table)
	if err != nil {
		return err
	}
	for _, f := range info.Families {
		if f == btFamily {
			return nil
		}
	}
	if err := ac.CreateColumnFamily(ctx, table, btFamily); err != nil && status.Code(err) != codes.AlreadyExists {
		return err
	}
	return ac.SetGCPolicy(ctx, table, btFamily, bigtable.MaxVersionsPolicy(1))
}

func (b *Store) err(op string, err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Canceled:
		return fmt.Errorf("keyservice: bigtable %s %s: %w (%w)", b.name, op, keyservice.ErrUnavailable, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("keyservice: bigtable %s %s: %w (%w)", b.name, op, keyservice.ErrUnavailable, err)
	}
	return fmt.Errorf("keyservice: bigtable %s %s: %w", b.name, op, err)
}

var btLatest = bigtable.RowFilter(bigtable.ChainFilters(bigtable.FamilyFilter("^"+btFamily+"$"), bigtable.LatestNFilter(1)))

func rowItem(key string, r bigtable.Row, now time.Time) (keyservice.Item, error) {
	it := keyservice.Item{Key: key, ReadAt: now}
	for _, c := range r[btFamily] {
		switch c.Column {
		case btFamily + ":" + btValue:
			it.Value = c.Value
		case btFamily + ":" + btRev:
			n, err := strconv.ParseUint(string(c.Value), 10, 64)
			if err != nil {
				return keyservice.Item{}, fmt.Errorf("keyservice: bigtable row %.4s…: bad revision cell", key)
			}
			it.Rev = n
		}
	}
	if it.Rev == 0 {
		it.Value = nil
	} else if it.Value == nil {
		it.Value = []byte{}
	}
	return it, nil
}

// Get implements [keyservice.Store] with one ReadRows call.
func (b *Store) Get(ctx context.Context, keys []string) ([]keyservice.Item, error) {
	rows := make(map[string]bigtable.Row, len(keys))
	err := b.tbl.ReadRows(ctx, bigtable.RowList(keys), func(r bigtable.Row) bool {
		rows[r.Key()] = r
		return true
	}, btLatest)
	if err != nil {
		return nil, b.err("read", err)
	}
	now := b.now()
	out := make([]keyservice.Item, len(keys))
	for i, k := range keys {
		out[i] = keyservice.Item{Key: k, ReadAt: now}
		if r, ok := rows[k]; ok {
			it, err := rowItem(k, r, now)
			if err != nil {
				return nil, err
			}
			out[i] = it
		}
	}
	return out, nil
}

func (b *Store) read(ctx context.Context, key string) (keyservice.Item, error) {
	items, err := b.Get(ctx, []string{key})
	if err != nil {
		return keyservice.Item{}, err
	}
	return items[0], nil
}

// Put implements [keyservice.Store] with one CheckAndMutateRow.
func (b *Store) Put(ctx context.Context, key string, value []byte, rev uint64) (keyservice.Item, error) {
	write := bigtable.NewMutation()
	write.DeleteCellsInColumn(btFamily, btValue)
	write.DeleteCellsInColumn(btFamily, btRev)
	ts := bigtable.Now().TruncateToMilliseconds()
	write.Set(btFamily, btValue, ts, value)
	write.Set(btFamily, btRev, ts, []byte(strconv.FormatUint(rev+1, 10)))
	var cond *bigtable.Mutation
	revCell := bigtable.ChainFilters(bigtable.FamilyFilter("^"+btFamily+"$"), bigtable.ColumnFilter("^"+btRev+"$"), bigtable.LatestNFilter(1))
	var wantMatch bool
	if rev == 0 {
		// Write only if no revision cell exists.
		cond = bigtable.NewCondMutation(revCell, nil, write)
		wantMatch = false
	} else {
		exact := bigtable.ChainFilters(revCell, bigtable.ValueFilter("^"+regexp.QuoteMeta(strconv.FormatUint(rev, 10))+"$"))
		cond = bigtable.NewCondMutation(exact, write, nil)
		wantMatch = true
	}
	var matched bool
	if err := b.tbl.Apply(ctx, key, cond, bigtable.GetCondMutationResult(&matched)); err != nil {
		return keyservice.Item{}, b.err("conditional write", err)
	}
	if matched == wantMatch {
		return keyservice.Item{Key: key, Value: append([]byte{}, value...), Rev: rev + 1, ReadAt: b.now()}, nil
	}
	cur, err := b.read(ctx, key)
	if err != nil {
		return keyservice.Item{}, err
	}
	return cur, keyservice.ErrConflict
}

// Delete implements [keyservice.Store].
func (b *Store) Delete(ctx context.Context, key string) error {
	m := bigtable.NewMutation()
	m.DeleteRow()
	return b.err("delete", b.tbl.Apply(ctx, key, m))
}

// Table is the table name.
func (b *Store) Table() string { return b.table }

// Close implements [keyservice.Store].
func (b *Store) Close() error { return b.client.Close() }
