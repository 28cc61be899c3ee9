package pipelines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

// ViewConfig configures View: decrypting one published hour for an
// authorized service.
type ViewConfig struct {
	Root     string
	Type     string
	Version  int
	Hour     time.Time
	Out      string // output file: a local path or gs://bucket/path/file
	Format   string // "ndjson" (default) or "avro"
	KeysURL  string // a key service the caller may decrypt with
	KeyScope string // must be the scope the data was written with ("" = transforms.DefaultKeyScope)
	// KeyCacheSize: subjects' keys and built ciphers a worker keeps; 0 =
	// transforms.DefaultKeyCacheSize.
	KeyCacheSize int
}

// ViewResult counts what View wrote.
type ViewResult struct {
	Out             string
	Parts           int   // published parts of the hour read: the main part and its supplements
	Records         int64 // records written
	ShreddedRecords int64 // records with at least one field null because its key is gone
	ShreddedFields  int64
	CorruptRecords  int64 // records with a ciphertext that did not decrypt (field written as null)
	CorruptFields   int64
	Unreadable      int64 // records that are not valid Avro of the schema (skipped)
	Elapsed         time.Duration
}

// ErrNotPublished is returned for an hour without _SUCCESS.
var ErrNotPublished = errors.New("pipelines: hour is not published (no _SUCCESS)")

// View decrypts one published dataset hour — every record of its main part
// and of its published late supplements, each once, in that order — into
// one file: PII of shredded users and revoked categories comes out as null,
// a tampered or moved ciphertext as null and counted as corrupt.
func View(ctx context.Context, cfg ViewConfig) (*ViewResult, error) {
	if cfg.Format == "" {
		cfg.Format = transforms.FormatNDJSON
	}
	if cfg.Root == "" || cfg.Type == "" || cfg.Out == "" {
		return nil, fmt.Errorf("%w: view needs --root, --type and --out", ErrConfig)
	}
	if cfg.Version == 0 {
		cfg.Version = 1
	}
	reg, err := schemas.Embedded()
	if err != nil {
		return nil, err
	}
	s, err := reg.Lookup(cfg.Type, cfg.Version)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	start := time.Now()
	b, err := blob.Open(ctx, cfg.Root)
	if err != nil {
		return nil, err
	}
	h := layout.Hour{Type: cfg.Type, Version: cfg.Version, Hour: cfg.Hour.UTC()}
	dh, err := dataset.ReadPublished(ctx, b, h)
	if errors.Is(err, dataset.ErrNotPublished) {
		return nil, fmt.Errorf("%s: %w", h, ErrNotPublished)
	}
	if err != nil {
		return nil, err
	}
	outRoot, outName := splitOut(cfg.Out)
	out, err := blob.Open(ctx, outRoot)
	if err != nil {
		return nil, err
	}
	// Every file of every part: the main part, then its supplements.
	var files []string
	for _, f := range dh.Files() {
		files = append(files, f.Name)
	}
	res := &ViewResult{Out: cfg.Out, Parts: len(dh.Parts)}
	partPrefix := ".parts-" + outName + "/"
	if len(files) > 0 {
		p, sc := beam.NewPipelineWithRoot()
		parts, err := transforms.DecryptFiles(sc, transforms.DecryptConfig{Root: cfg.Root, Type: cfg.Type, Version: cfg.Version,
			KeysURL: cfg.KeysURL, KeyScope: cfg.KeyScope, OutRoot: outRoot, OutName: partPrefix, Format: cfg.Format,
			KeyCacheSize: cfg.KeyCacheSize}, files)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		transforms.EndBranch(sc, parts)
		pr, err := run(ctx, p)
		if errors.Is(err, ErrDryRun) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("pipelines: view %s: %w", h, err)
		}
		if pr != nil {
			for _, c := range pr.Metrics().AllMetrics().Counters() {
				if c.Namespace() != transforms.MetricsNamespaceView {
					continue
				}
				n := c.Result()
				switch c.Name() {
				case transforms.CountViewRecords:
					res.Records += n
				case transforms.CountViewShredded:
					res.ShreddedRecords += n
				case transforms.CountViewShredFields:
					res.ShreddedFields += n
				case transforms.CountViewCorrupt:
					res.CorruptRecords += n
				case transforms.CountViewCorruptFlds:
					res.CorruptFields += n
				case transforms.CountViewBad:
					res.Unreadable += n
				}
			}
		}
	}
	if err := mergeParts(ctx, out, partPrefix, outName, cfg.Format, s); err != nil {
		return nil, err
	}
	if d, ok := out.(*blob.Dir); ok {
		// A directory keeps the parts' (now empty) directory; GCS has none.
		os.Remove(filepath.Join(d.Root(), filepath.FromSlash(strings.TrimSuffix(partPrefix, "/"))))
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

func splitOut(out string) (root, name string) {
	if strings.HasPrefix(out, "gs://") {
		i := strings.LastIndexByte(out, '/')
		return out[:i], out[i+1:]
	}
	return path.Dir(out), path.Base(out)
}

// writeMerged writes the records of the Avro parts, in order, to out as
// one container file.
func writeMerged(ctx context.Context, b blob.Bucket, out io.Writer, parts []string, s *schemas.Schema) error {
	vs, err := record.ViewSchema(s)
	if err != nil {
		return err
	}
	codec, err := goavro.NewCodec(string(vs))
	if err != nil {
		return err
	}
	w, err := goavro.NewOCFWriter(goavro.OCFConfig{W: out, Codec: codec, CompressionName: goavro.CompressionDeflateLabel})
	if err != nil {
		return err
	}
	for _, p := range parts {
		data, err := blob.ReadAll(ctx, b, p)
		if err != nil {
			return err
		}
		r, err := goavro.NewOCFReader(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("part %s: %w", p, err)
		}
		for r.Scan() {
			v, err := r.Read()
			if err != nil {
				return err
			}
			if err := w.Append([]any{v}); err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeParts joins the per-file parts (in name order) into the output
// object, replacing an earlier output, and removes the parts: NDJSON by
// blob.Bucket.Compose, Avro through this process.
func mergeParts(ctx context.Context, b blob.Bucket, prefix, name, format string, s *schemas.Schema) error {
	parts, err := b.List(ctx, prefix)
	if err != nil {
		return err
	}
	sort.Strings(parts)
	if err := b.Delete(ctx, name); err != nil {
		return err
	}
	if format == transforms.FormatAvro {
		out, err := b.Create(ctx, name)
		if err != nil {
			return err
		}
		if err := writeMerged(ctx, b, out, parts, s); err != nil {
			out.Abort()
			return fmt.Errorf("pipelines: view %s: %w", name, err)
		}
		if err := out.Close(); err != nil {
			return err
		}
	} else if err := b.Compose(ctx, name, parts); err != nil {
		// NDJSON parts are joined as they are, where they are: the
		// decrypted bytes do not pass through this process.
		return fmt.Errorf("pipelines: view %s: %w", name, err)
	}
	for _, p := range parts {
		if err := b.Delete(ctx, p); err != nil {
			return err
		}
	}
	return nil
}
