package transforms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/linkedin/goavro/v2"
	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

func init() {
	register.DoFn3x1[context.Context, string, func(string), error](&decryptFileFn{})
}

// Metric names of the view counters (namespace MetricsNamespaceView).
const (
	MetricsNamespaceView = "lockstream.view"
	CountViewRecords     = "records"
	CountViewShredded    = "shredded_records"
	CountViewShredFields = "shredded_fields"
	CountViewCorrupt     = "corrupt_records"
	CountViewCorruptFlds = "corrupt_fields"
	CountViewBad         = "unreadable_records"
)

// View output formats.
const (
	FormatNDJSON = "ndjson"
	FormatAvro   = "avro"
)

// DecryptConfig configures DecryptFiles.
type DecryptConfig struct {
	Root     string // dataset root
	Type     string
	Version  int
	KeysURL  string
	KeyScope string
	OutRoot  string // where the part outputs go (blob root)
	OutName  string // object name prefix of the parts (e.g. "dir/")
	Format   string
	Batch    int // records per key lookup (default 500)
	// KeyCacheSize: subjects whose keys, and keys whose built ciphers, a
	// worker keeps (WriteConfig.KeyCacheSize; 0 = DefaultKeyCacheSize).
	KeyCacheSize int
}

// Validate checks the configuration when the transform is built.
func (c *DecryptConfig) Validate() error {
	if c.Root == "" || c.Type == "" || c.Version < 1 || c.OutRoot == "" || c.OutName == "" {
		return errors.New("transforms.DecryptFiles: Root, Type, Version, OutRoot and OutName are required")
	}
	if err := ValidateKeysURL(c.KeysURL); err != nil {
		return fmt.Errorf("transforms.DecryptFiles: %w", err)
	}
	if c.Format != FormatNDJSON && c.Format != FormatAvro {
		return fmt.Errorf("transforms.DecryptFiles: format %q (ndjson or avro)", c.Format)
	}
	if c.Batch < 0 {
		return errors.New("transforms.DecryptFiles: Batch < 0")
	}
	if c.KeyCacheSize < 0 {
		return errors.New("transforms.DecryptFiles: KeyCacheSize < 0")
	}
	return nil
}

// DecryptFiles decrypts dataset files (one part output per input file) and
// returns the names of the parts it wrote. The files may belong to several
// parts of an hour (its main part and late supplements, whose files share
// base names): each output is named after its file's part and base name, so
// outputs are distinct, and sort main part first, then supplements in
// order.
func DecryptFiles(s beam.Scope, cfg DecryptConfig, files []string) (beam.PCollection, error) {
	if err := cfg.Validate(); err != nil {
		return beam.PCollection{}, err
	}
	if cfg.Batch == 0 {
		cfg.Batch = 500
	}
	s = s.Scope("DecryptFiles")
	return beam.ParDo(s, &decryptFileFn{Cfg: cfg}, beam.CreateList(s, files)), nil
}

// decryptedPartName names the decrypted output of dataset file name:
// "<prefix><seq>.<base>.<format>", seq being 0000 for a main part's file and
// n for a file of supplement late-000n.
func decryptedPartName(prefix, name, format string) string {
	seq := 0
	if _, _, file, ok := layout.ParseDir(name); ok {
		if dir, _, nested := strings.Cut(file, "/"); nested {
			seq, _ = layout.ParseSupplementPart(dir)
		}
	}
	return fmt.Sprintf("%s%04d.%s.%s", prefix, seq, strings.TrimSuffix(path.Base(name), ".avro"), format)
}

type decryptFileFn struct {
	Cfg DecryptConfig

	in, out blob.Bucket
	schema  *schemas.Schema
	lay     *record.Layout
	codec   *goavro.Codec
	files   dataset.FileReader
	keys    *keyEnv
	// lanes decrypt a file's batches side by side, each with a decryptor
	// of its own (the key client and cipher cache are shared), a lane
	// running while it holds a slot of cores: one lane per core, or
	// viewLanesPerCore against a key service across a network, where a
	// lane lets go of its slot while its key lookup waits.
	lanes []viewLane
	cores coreSlots
	// arena, ends, recs, the lanes' room and pbuf are reused from round to
	// round and file to file (a DoFn instance handles one element at a
	// time): a round's records, batches of them decrypted, and the part's
	// writer's buffer.
	arena []byte
	ends  []int
	recs  [][]byte
	pbuf  *bufio.Writer
}

// viewLane is one lane of a file's decryption: a batch of its records at
// a time.
type viewLane struct {
	dec   *record.Decryptor
	lines []byte         // NDJSON: the batch's lines
	plain []record.Plain // Avro: the batch's records
	errs  []error        // Avro: per record, not valid Avro of the schema
	t     record.Tally
}

func (fn *decryptFileFn) Setup(ctx context.Context) error {
	var err error
	if fn.in, err = blob.Open(ctx, fn.Cfg.Root); err != nil {
		return err
	}
	if fn.out, err = blob.Open(ctx, fn.Cfg.OutRoot); err != nil {
		return err
	}
	if fn.schema, fn.lay, err = dataset.Schema(fn.Cfg.Type, fn.Cfg.Version); err != nil {
		return err
	}
	vs, err := record.ViewSchema(fn.schema)
	if err != nil {
		return err
	}
	if fn.codec, err = goavro.NewCodec(string(vs)); err != nil {
		return err
	}
	keys, err := keyEnvFor(ctx, fn.Cfg.KeysURL, fn.Cfg.KeyScope, fn.Cfg.KeyCacheSize)
	if err != nil {
		return err
	}
	fn.keys = keys
	fn.cores = newCoreSlots()
	if networked(keys.keys) {
		fn.useLanes(viewLanesPerCore * cap(fn.cores))
	} else {
		fn.useLanes(cap(fn.cores))
	}
	return nil
}

// viewLanesPerCore is how many lanes per core decrypt a file against a
// key service across a network: while some lanes wait for keys, others
// decrypt (view of 1M records against a key service 2 ms away: see
// BENCHMARKS.md).
const viewLanesPerCore = 4

// useLanes makes n lanes (at least 1).
func (fn *decryptFileFn) useLanes(n int) {
	fn.lanes = make([]viewLane, max(n, 1))
	for i := range fn.lanes {
		fn.lanes[i].dec = record.NewDecryptor(yielding(fn.keys.keys, fn.cores), fn.keys.ciphers)
	}
}

func (fn *decryptFileFn) ProcessElement(ctx context.Context, name string, emit func(string)) error {
	// The part is written as it is decrypted, a round of batches at a
	// time: neither a file's records nor its decrypted records (about
	// twice their size) are held whole.
	part := decryptedPartName(fn.Cfg.OutName, name, fn.Cfg.Format)
	pw, err := createReplacing(ctx, fn.out, part) // a retried bundle's earlier part goes
	if err != nil {
		return err
	}
	defer pw.Abort() // unless closed: nothing of a part that failed is left
	if fn.pbuf == nil {
		fn.pbuf = bufio.NewWriterSize(nil, 256<<10)
	}
	out := fn.pbuf
	out.Reset(pw)
	var ocf *goavro.OCFWriter
	if fn.Cfg.Format == FormatAvro {
		if ocf, err = goavro.NewOCFWriter(goavro.OCFConfig{W: out, Codec: fn.codec, CompressionName: goavro.CompressionDeflateLabel}); err != nil {
			return err
		}
	}
	// A round's records are copied into one arena (ReadFile's bytes are
	// only valid during its callback), sliced from it once the round is
	// whole, and decrypted: the arena is reused from round to round. Not
	// decoded here: the decryptor decodes each record itself.
	var t record.Tally
	arena, ends := fn.arena[:0], fn.ends[:0]
	decrypt := func() error {
		recs := slices.Grow(fn.recs[:0], len(ends))[:len(ends)]
		for i, start := 0, 0; i < len(ends); i++ {
			recs[i] = arena[start:ends[i]:ends[i]]
			start = ends[i]
		}
		fn.recs = recs
		err := fn.decryptRound(ctx, name, part, recs, out, ocf, &t)
		arena, ends = arena[:0], ends[:0]
		return err
	}
	perRound := len(fn.lanes) * fn.Cfg.Batch
	var failed error
	err = fn.files.ReadFile(ctx, fn.in, name, fn.lay, nil, func(_ []record.Column, _ *record.Layout, rec []byte) {
		if failed != nil {
			return // the rest of the file is read, not decrypted
		}
		arena = append(arena, rec...)
		ends = append(ends, len(arena))
		if len(ends) == perRound {
			failed = decrypt()
		}
	})
	if err != nil {
		err = fmt.Errorf("transforms.DecryptFiles: %s: %w", name, err)
	}
	if err == nil {
		err = failed
	}
	if err == nil && len(ends) > 0 {
		err = decrypt()
	}
	fn.arena, fn.ends = arena, ends
	if err != nil {
		return err
	}
	// Counted once per file, not per record.
	for _, c := range []struct {
		name string
		n    int64
	}{{CountViewRecords, t.Records}, {CountViewShredded, t.Shredded}, {CountViewShredFields, t.ShreddedFields},
		{CountViewCorrupt, t.Corrupt}, {CountViewCorruptFlds, t.CorruptFields}, {CountViewBad, t.Unreadable}} {
		if c.n > 0 {
			beam.NewCounter(MetricsNamespaceView, c.name).Inc(ctx, c.n)
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("transforms.DecryptFiles: %s: %w", part, err)
	}
	if err := pw.Close(); err != nil {
		return err
	}
	emit(part)
	return nil
}

// decryptRound decrypts recs (at most one batch per lane) in the lanes
// side by side and writes them, in order, to out (NDJSON) or ocf (Avro),
// counting them into t. name is the file they come from, part the one
// they go to.
func (fn *decryptFileFn) decryptRound(ctx context.Context, name, part string, recs [][]byte, out *bufio.Writer, ocf *goavro.OCFWriter, t *record.Tally) error {
	round := min(len(fn.lanes), (len(recs)+fn.Cfg.Batch-1)/fn.Cfg.Batch)
	g, gctx := errgroup.WithContext(ctx)
	for i := range round {
		lo := i * fn.Cfg.Batch // round's batches all start within recs
		batch := recs[lo:min(lo+fn.Cfg.Batch, len(recs))]
		l := &fn.lanes[i]
		g.Go(func() error {
			release, err := fn.cores.hold(gctx)
			if err != nil {
				return err
			}
			defer release()
			l.t = record.Tally{}
			if ocf == nil {
				l.lines, err = l.dec.AppendJSONLines(gctx, fn.schema, l.lines[:0], batch, &l.t)
			} else {
				l.plain, l.errs, err = l.dec.Decrypt(gctx, fn.schema, batch)
			}
			if err != nil {
				return fmt.Errorf("transforms.DecryptFiles: %s: %w", name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i := range round {
		l := &fn.lanes[i]
		if ocf == nil {
			t.AddTally(l.t)
			if _, err := out.Write(l.lines); err != nil {
				return fmt.Errorf("transforms.DecryptFiles: %s: %w", part, err)
			}
			continue
		}
		for j := range l.plain {
			if l.errs[j] != nil {
				t.Unreadable++
				continue
			}
			t.Add(&l.plain[j])
			if err := ocf.Append([]any{l.plain[j].Native(fn.schema)}); err != nil {
				return fmt.Errorf("transforms.DecryptFiles: %s: encode: %w", name, err)
			}
		}
		l.plain, l.errs = nil, nil
	}
	return nil
}
