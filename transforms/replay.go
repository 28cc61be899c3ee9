package transforms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/record"
)

func init() {
	register.DoFn3x1[context.Context, ReplayFile, func(beam.EventTime, Batch), error](&replayFn{})
	register.Emitter2[beam.EventTime, Batch]()
}

// MaxBatchSize bounds a batch (a Pub/Sub Pull returns at most 1000).
const MaxBatchSize = 10_000

// MaxLineBytes is the longest replay line read; a longer line is a
// bad_message (a payload is at most MaxPayload, 1 MiB by default, plus JSON
// escaping).
const MaxLineBytes = 8 << 20

// ReplayConfig configures ReadReplay.
type ReplayConfig struct {
	Files     []string // replay files: local paths, file:// or gs:// (read through blob)
	BatchSize int      // messages per batch, 1..MaxBatchSize
	RunID     string   // prefix of batch ids; unique per run
	// Fallback is the hour of bad lines in a batch without any good message.
	Fallback time.Time
}

func (c ReplayConfig) validate() error {
	if len(c.Files) == 0 {
		return errors.New("transforms.ReadReplay: no input files")
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		return fmt.Errorf("transforms.ReadReplay: BatchSize %d not in 1..%d", c.BatchSize, MaxBatchSize)
	}
	if err := validRunID(c.RunID); err != nil {
		return fmt.Errorf("transforms.ReadReplay: %w", err)
	}
	return nil
}

func validRunID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("RunID %q: want 1..64 characters of [A-Za-z0-9_]", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("RunID %q: want 1..64 characters of [A-Za-z0-9_]", id)
		}
	}
	return nil
}

// ReadReplay reads replay files (NDJSON of the input message shape) into
// batches of up to cfg.BatchSize messages. It is bounded: when every file is
// read, the watermark goes to +inf and every open hour closes. An invalid
// configuration is an error at construction, as for every transform of
// this package.
func ReadReplay(s beam.Scope, cfg ReplayConfig) (beam.PCollection, error) {
	if err := cfg.validate(); err != nil {
		return beam.PCollection{}, err
	}
	s = s.Scope("transforms.ReadReplay")
	var parts []any
	for i, f := range cfg.Files {
		parts = append(parts, splitReplay(i, f, ReplayChunkBytes)...)
	}
	col := beam.Create(s, parts...)
	if len(parts) > 1 {
		// A handful of (file, byte range) elements cross this shuffle, so
		// that memory stays bounded by the ranges in flight. Dataflow
		// spreads them over its workers. prism runs them in one bundle, one
		// range at a time: it splits a bundle only when it stops making
		// progress. There AnonymizeAndWrite's slices, and its writes
		// beside the next batch's, keep both cores busy.
		col = beam.Reshuffle(s, col)
	}
	return beam.ParDo(s, &replayFn{BatchSize: cfg.BatchSize, RunID: cfg.RunID, FallbackMillis: cfg.Fallback.UnixMilli()}, col), nil
}

// ReplayChunkBytes is the size of the byte ranges local replay files are
// read in (in parallel).
const ReplayChunkBytes = 16 << 20

// splitReplay cuts a local file into byte ranges; other files (gs://) are
// read whole.
func splitReplay(index int, p string, chunk int64) []any {
	whole := []any{ReplayFile{Index: index, Path: p}}
	if strings.Contains(p, "://") && !strings.HasPrefix(p, "file://") {
		return whole
	}
	st, err := os.Stat(strings.TrimPrefix(p, "file://"))
	if err != nil || st.Size() <= chunk {
		return whole // a missing file fails in the DoFn, with its name
	}
	var out []any
	for part, start := 0, int64(0); start < st.Size(); part, start = part+1, start+chunk {
		out = append(out, ReplayFile{Index: index, Path: p, Part: part, Start: start, End: min(start+chunk, st.Size())})
	}
	return out
}

type replayFn struct {
	BatchSize      int
	RunID          string
	FallbackMillis int64
}

// ProcessElement reads one file sequentially.
func (fn *replayFn) ProcessElement(ctx context.Context, f ReplayFile, emit func(beam.EventTime, Batch)) error {
	dir, base := path.Split(f.Path)
	if dir == "" {
		dir = "."
	}
	bucket, err := blob.Open(ctx, dir)
	if err != nil {
		return fmt.Errorf("transforms: replay %s: %w", base, err)
	}
	r, err := bucket.Open(ctx, base)
	if err != nil {
		return fmt.Errorf("transforms: replay: %w", err)
	}
	defer r.Close()

	// A range [Start, End) holds the lines that start in it: skip the line
	// that began before Start, stop at the first line starting at or after End.
	var pos int64
	if f.Start > 0 {
		if sk, ok := r.(io.Seeker); ok {
			if _, err := sk.Seek(f.Start-1, io.SeekStart); err != nil {
				return fmt.Errorf("transforms: replay %s: %w", base, err)
			}
		} else if _, err := io.CopyN(io.Discard, r, f.Start-1); err != nil {
			return fmt.Errorf("transforms: replay %s: %w", base, err)
		}
		pos = f.Start - 1
	}
	br := bufio.NewReaderSize(r, 1<<20)
	if f.Start > 0 {
		_, n, _, err := readLine(br) // the rest of the line before Start (or just its newline)
		if err != nil && err != io.EOF {
			return fmt.Errorf("transforms: replay %s: %w", base, err)
		}
		pos += n
	}

	// Reading and parsing run one batch ahead, on their own goroutine, of
	// the emit, which runs the fused anonymize and write stages: the
	// parse (a sixth of ingest's CPU) overlaps them instead of taking turns.
	type item struct {
		ts int64
		b  Batch
	}
	items := make(chan item, 1)
	done := make(chan struct{})
	defer close(done) // a panicking emit stops the reader too
	errc := make(chan error, 1)
	go func() {
		defer close(items)
		errc <- fn.parse(br, f, base, pos, func(ts int64, b Batch) bool {
			select {
			case items <- item{ts, b}:
				return true
			case <-done:
				return false
			}
		})
	}()
	for it := range items {
		emit(mtime.FromMilliseconds(it.ts), it.b)
	}
	return <-errc
}

// parse reads the lines of range f from br (at byte pos of the file) into
// batches and hands each to send with its event time; it stops early, with
// no error, when send returns false.
func (fn *replayFn) parse(br *bufio.Reader, f ReplayFile, base string, pos int64, send func(int64, Batch) bool) error {
	var (
		lp      record.LineParser // equal attributes share a map
		b       Batch
		seq     int
		lineNo  int64
		lastTS  = fn.FallbackMillis
		minTS   int64
		hasGood bool
	)
	flush := func() bool {
		if len(b.Messages) == 0 && len(b.Bad) == 0 {
			return true
		}
		ts := lastTS
		if hasGood {
			ts = minTS
			lastTS = minTS
		}
		b.ID = fn.RunID + "-f" + strconv.Itoa(f.Index) + "p" + strconv.Itoa(f.Part) + "-" + strconv.Itoa(seq)
		b.TimeMillis = ts
		seq++
		ok := send(ts, b)
		b = Batch{}
		hasGood = false
		return ok
	}
	for {
		if f.End > 0 && pos >= f.End {
			break
		}
		lineStart := pos
		line, n, tooLong, err := readLine(br)
		pos += n
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("transforms: replay %s at byte %d: %w", base, lineStart, err)
		}
		lineNo++
		if !tooLong && len(line) == 0 {
			continue // blank lines (a trailing newline) are not messages
		}
		var m record.Message
		if tooLong {
			err = fmt.Errorf("%w: longer than %d bytes", record.ErrBadLine, MaxLineBytes)
		} else {
			m, err = lp.Parse(line)
		}
		if err != nil {
			// record's parse errors never quote the line.
			bl := BadLine{File: base, Offset: lineStart, Cause: err.Error()}
			if f.Start == 0 {
				bl.Line = lineNo // line numbers are known in a file's first range
			}
			b.Bad = append(b.Bad, bl)
		} else {
			pt := m.PublishTime.UnixMilli()
			if !hasGood || pt < minTS {
				minTS = pt
			}
			hasGood = true
			b.Messages = append(b.Messages, FromRecord(m))
		}
		if len(b.Messages)+len(b.Bad) >= fn.BatchSize {
			if !flush() {
				return nil
			}
		}
	}
	flush()
	return nil
}

// readLine returns the next line without its newline; a line longer than
// MaxLineBytes is consumed and reported as tooLong.
func readLine(br *bufio.Reader) (line []byte, n int64, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		n += int64(len(frag))
		if len(buf)+len(frag) > MaxLineBytes {
			tooLong = true
			buf = buf[:0]
		} else if !tooLong {
			buf = append(buf, frag...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(buf) == 0 && !tooLong && len(frag) == 0 {
				return nil, n, false, io.EOF
			}
			return trimEOL(buf), n, tooLong, nil
		}
		if err != nil {
			return nil, n, false, err
		}
		return trimEOL(buf), n, tooLong, nil
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}
