package transforms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
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
// read, the watermark goes to +inf and every open hour closes. Invalid
// configuration panics at construction, like Beam's own transforms.
func ReadReplay(s beam.Scope, cfg ReplayConfig) beam.PCollection {
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	s = s.Scope("transforms.ReadReplay")
	files := make([]any, len(cfg.Files))
	for i, f := range cfg.Files {
		files[i] = ReplayFile{Index: i, Path: f}
	}
	col := beam.Create(s, files...)
	return beam.ParDo(s, &replayFn{BatchSize: cfg.BatchSize, RunID: cfg.RunID, FallbackMillis: cfg.Fallback.UnixMilli()}, col)
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

	br := bufio.NewReaderSize(r, 1<<20)
	var (
		b       Batch
		seq     int
		lineNo  int64
		lastTS  = fn.FallbackMillis
		minTS   int64
		hasGood bool
	)
	flush := func() {
		if len(b.Messages) == 0 && len(b.Bad) == 0 {
			return
		}
		ts := lastTS
		if hasGood {
			ts = minTS
			lastTS = minTS
		}
		b.ID = fn.RunID + "-f" + strconv.Itoa(f.Index) + "-" + strconv.Itoa(seq)
		seq++
		emit(mtime.FromMilliseconds(ts), b)
		b = Batch{}
		hasGood = false
	}
	for {
		line, tooLong, err := readLine(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("transforms: replay %s line %d: %w", base, lineNo+1, err)
		}
		lineNo++
		if !tooLong && len(line) == 0 {
			continue // blank lines (a trailing newline) are not messages
		}
		var m record.Message
		if tooLong {
			err = fmt.Errorf("%w: longer than %d bytes", record.ErrBadLine, MaxLineBytes)
		} else {
			m, err = record.ParseLine(line)
		}
		if err != nil {
			// record.ParseLine errors never quote the line.
			b.Bad = append(b.Bad, BadLine{File: base, Line: lineNo, Cause: err.Error()})
		} else {
			pt := m.PublishTime.UnixMilli()
			if !hasGood || pt < minTS {
				minTS = pt
			}
			hasGood = true
			b.Messages = append(b.Messages, FromRecord(m))
		}
		if len(b.Messages)+len(b.Bad) >= fn.BatchSize {
			flush()
		}
	}
	flush()
	return nil
}

// readLine returns the next line without its newline; a line longer than
// MaxLineBytes is consumed and reported as tooLong.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
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
				return nil, false, io.EOF
			}
			return trimEOL(buf), tooLong, nil
		}
		if err != nil {
			return nil, false, err
		}
		return trimEOL(buf), tooLong, nil
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
