package transforms

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
)

// TestWriteFnRetriedBundleEmitsEachFileOnce drives writeFn as a runner
// would after a failure: a bundle writes its first batch and fails before
// FinishBundle (the batch's files still being written), and the bundle is
// retried on the same DoFn. The retry must not emit or count the failed
// bundle's pending write: every file name comes out once, and the names
// are exactly the part files on disk.
func TestWriteFnRetriedBundleEmitsEachFileOnce(t *testing.T) {
	ctx := context.Background()
	in := genInput(60)
	file := writeLines(t, in.lines)
	var batches []Batch
	rf := &replayFn{BatchSize: 7, RunID: "run1", FallbackMillis: h6.UnixMilli()}
	if err := rf.ProcessElement(ctx, ReplayFile{Path: file}, func(_ beam.EventTime, b Batch) { batches = append(batches, b) }); err != nil {
		t.Fatal(err)
	}
	if len(batches) < 3 {
		t.Fatalf("%d batches", len(batches))
	}
	root := t.TempDir()
	fn := &writeFn{Config: writeFnConfig{Root: root, KeysURL: registerTestKeys(&testKeys{}), RunID: "run1", KeyRetryBudgetMs: 1000}}
	if err := fn.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	emit := func(n string) { names[n]++ }

	// The failed bundle: its first batch, then no FinishBundle.
	fn.StartBundle(ctx, emit)
	if err := fn.ProcessElement(ctx, batches[0], emit); err != nil {
		t.Fatal(err)
	}
	// The retry: every batch, on the same DoFn.
	fn.StartBundle(ctx, emit)
	for _, b := range batches {
		if err := fn.ProcessElement(ctx, b, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := fn.FinishBundle(ctx, emit); err != nil {
		t.Fatal(err)
	}

	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	all, err := b.List(ctx, layout.RawArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, n := range all {
		if !IsPart(n) {
			continue
		}
		parts++
		if names[n] != 1 {
			t.Errorf("%s emitted %d times", n, names[n])
		}
	}
	if parts == 0 || len(names) != parts {
		t.Fatalf("%d names emitted for %d part files", len(names), parts)
	}
}

// barrierKeys answers as testKeys once want lookups have been in flight
// at the same time, and fails the lookups of a run that never gets there.
type barrierKeys struct {
	testKeys
	want int
	mu   sync.Mutex
	in   int
	open chan struct{}
}

// Networked: the lookups stand for those of a key service across a
// network (keyclient.Client.Networked).
func (*barrierKeys) Networked() bool { return true }

// wait returns once want lookups have been in flight at once.
func (k *barrierKeys) wait() error {
	k.mu.Lock()
	if k.in++; k.in == k.want {
		close(k.open)
	}
	k.mu.Unlock()
	select {
	case <-k.open:
		return nil
	case <-time.After(5 * time.Second):
		k.mu.Lock()
		defer k.mu.Unlock()
		return fmt.Errorf("%d key lookups in flight at once, want %d", k.in, k.want)
	}
}

func (k *barrierKeys) ForEncrypt(ctx context.Context, users, cats []string) ([]keyclient.UserKeys, error) {
	if err := k.wait(); err != nil {
		return nil, err
	}
	return k.testKeys.ForEncrypt(ctx, users, cats)
}

func (k *barrierKeys) ForDecrypt(ctx context.Context, subs, cats []string) ([]keyclient.UserKeys, error) {
	if err := k.wait(); err != nil {
		return nil, err
	}
	return k.testKeys.ForDecrypt(ctx, subs, cats)
}

// TestSlicesWaitingForKeysLeaveTheirCore: a batch's slices let go of
// their core while their key lookup waits, so that every slice's lookup
// is in flight at once even with one core to share (as against a key
// service across a network: the waits overlap). A slice that held its
// core through its lookup would keep the other three from theirs, and the
// barrier would never open.
func TestSlicesWaitingForKeysLeaveTheirCore(t *testing.T) {
	ctx := context.Background()
	in := genInput(4 * sliceSize)
	file := writeLines(t, in.lines)
	var batches []Batch
	rf := &replayFn{BatchSize: 8 * sliceSize, RunID: "run1", FallbackMillis: h6.UnixMilli()}
	if err := rf.ProcessElement(ctx, ReplayFile{Path: file}, func(_ beam.EventTime, b Batch) { batches = append(batches, b) }); err != nil {
		t.Fatal(err)
	}
	if len(batches) != 1 || len(batches[0].Messages)/sliceSize != 4 {
		t.Fatalf("%d batches, want one of 4 slices", len(batches))
	}
	keys := &barrierKeys{want: 4, open: make(chan struct{})}
	url := RegisterKeys(fmt.Sprintf("transforms-barrier-%d", keysSeq.Add(1)), keys)
	fn := &writeFn{Config: writeFnConfig{Root: t.TempDir(), KeysURL: url, RunID: "run1", KeyRetryBudgetMs: 1000}}
	if err := fn.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	fn.w.cores = make(coreSlots, 1)
	emit := func(string) {}
	fn.StartBundle(ctx, emit)
	if err := fn.ProcessElement(ctx, batches[0], emit); err != nil {
		t.Fatal(err)
	}
	if err := fn.FinishBundle(ctx, emit); err != nil {
		t.Fatal(err)
	}
	if len(fn.w.cores) != 0 {
		t.Fatalf("%d core slots still held after the batch", len(fn.w.cores))
	}
	// An in-process key source's lookups keep their core: their wait is
	// this process's CPU.
	if k := (&testKeys{}); yielding(k, fn.w.cores) != record.Keys(k) {
		t.Fatal("the lookups of a key source that is not networked let go of their core")
	}
}

// TestViewLanesWaitingForKeysLeaveTheirCore is the same for view: against
// a key service across a network a file is decrypted in viewLanesPerCore
// lanes per core, and a lane lets go of its core while its key lookup
// waits, so that 4 lanes' lookups are in flight at once on one core.
func TestViewLanesWaitingForKeysLeaveTheirCore(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	runWrite(t, writeLines(t, genInput(60).lines), WriteConfig{Root: root, KeysURL: registerTestKeys(&testKeys{}), KeyRetryBudget: time.Second})
	// The file with the most records: 4 batches of 3 or more.
	name, most := largestRawPlaybackPart(t, root)
	if most < 4*3 {
		t.Fatalf("at most %d records in a raw file, want 12 or more", most)
	}
	keys := &barrierKeys{want: 4, open: make(chan struct{})}
	url := RegisterKeys(fmt.Sprintf("transforms-barrier-%d", keysSeq.Add(1)), keys)
	fn := &decryptFileFn{Cfg: DecryptConfig{Root: root, Type: "PlaybackEvent", Version: 1, KeysURL: url,
		OutRoot: t.TempDir(), OutName: "parts/", Format: FormatNDJSON, Batch: 3}}
	if err := fn.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if want := viewLanesPerCore * runtime.GOMAXPROCS(0); len(fn.lanes) != want {
		t.Fatalf("%d lanes against a networked key service, want %d", len(fn.lanes), want)
	}
	fn.cores = make(coreSlots, 1)
	fn.useLanes(4)
	if err := fn.ProcessElement(ctx, name, func(string) {}); err != nil {
		t.Fatal(err)
	}
	if len(fn.cores) != 0 {
		t.Fatalf("%d core slots still held after the file", len(fn.cores))
	}
}

// TestViewDecryptsAFileInRounds: a file of more records than a round
// (lanes × Batch) is read and decrypted a round at a time, its arena
// reused, and its part holds the lines a single round writes, in order;
// the records left after the last whole round are decrypted too.
func TestViewDecryptsAFileInRounds(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	runWrite(t, writeLines(t, genInput(60).lines), WriteConfig{Root: root, KeysURL: registerTestKeys(&testKeys{}), KeyRetryBudget: time.Second})
	name, most := largestRawPlaybackPart(t, root)
	if most < 2*6 || most%6 == 0 {
		t.Fatalf("%d records in the largest raw file, want two rounds of 6 or more, and not whole rounds", most)
	}
	view := func(lanes, batch int) []byte {
		out := t.TempDir()
		fn := &decryptFileFn{Cfg: DecryptConfig{Root: root, Type: "PlaybackEvent", Version: 1, KeysURL: registerTestKeys(&testKeys{}),
			OutRoot: out, OutName: "parts/", Format: FormatNDJSON, Batch: batch}}
		if err := fn.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		fn.useLanes(lanes)
		var part string
		if err := fn.ProcessElement(ctx, name, func(p string) { part = p }); err != nil {
			t.Fatal(err)
		}
		if len(fn.ends) != 0 || lanes*batch < most && len(fn.recs) > lanes*batch {
			t.Fatalf("lanes %d, batch %d: %d records held after the file, %d in the last round", lanes, batch, len(fn.ends), len(fn.recs))
		}
		ob, err := blob.Open(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		data, err := blob.ReadAll(ctx, ob, part)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	whole, rounds := view(1, 1000), view(2, 3)
	if n := bytes.Count(whole, []byte("\n")); n != most {
		t.Fatalf("one round wrote %d lines of %d records", n, most)
	}
	if !bytes.Equal(rounds, whole) {
		t.Fatalf("in rounds of 6 records the part differs from one round's:\n%s\nwant\n%s", rounds, whole)
	}
}

// largestRawPlaybackPart is the raw PlaybackEvent file under root with the
// most records, and their number.
func largestRawPlaybackPart(t *testing.T, root string) (name string, records int) {
	t.Helper()
	b, names := rawPlaybackParts(t, root)
	for _, n := range names {
		data, err := blob.ReadAll(context.Background(), b, n)
		if err != nil {
			t.Fatal(err)
		}
		if recs := len(ocfRecords(t, data)); recs > records {
			name, records = n, recs
		}
	}
	return name, records
}

// ocfRecords reads every record of an OCF file with goavro.
func ocfRecords(t *testing.T, file []byte) []any {
	t.Helper()
	r, err := goavro.NewOCFReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	var recs []any
	for r.Scan() {
		rec, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// A networked key client wrapped for slices or lanes that let go of their
// core keeps the lookups record's anonymizer and decryptor look for: one
// lookup for a batch's sets of users, and answers into reused room.
func TestYieldingKeepsFastPaths(t *testing.T) {
	f := keyclient.NewFake()
	f.SetLatency(time.Millisecond)
	c, err := keyclient.New(f, keyclient.Options{Scope: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cores := make(coreSlots, 1)
	if _, ok := yielding(c, cores).(encryptSets); !ok {
		t.Error("the anonymizer's key source lost ForEncryptSets")
	}
	if _, ok := yielding(c, cores).(decryptInto); !ok {
		t.Error("the decryptor's key source lost ForDecryptInto")
	}
}
