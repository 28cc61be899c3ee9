package dataset

import (
	"context"
	"fmt"
	"io"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// Schema returns the embedded schema of a (type, version) and its record
// layout (the columns hourly and the readers decode).
func Schema(eventType string, version int) (*schemas.Schema, *record.Layout, error) {
	reg, err := schemas.Embedded()
	if err != nil {
		return nil, nil, err
	}
	s, err := reg.Lookup(eventType, version)
	if err != nil {
		return nil, nil, err
	}
	l, err := record.NewLayout(s)
	return s, l, err
}

// ReadRecords calls fn for every record of the given Avro files (raw,
// late or dataset files) of one type and version, with its decoded
// columns. cols and rec are reused: fn copies what it keeps.
func ReadRecords(ctx context.Context, b blob.Opener, eventType string, version int, files []string, fn func(cols []record.Column, lay *record.Layout, rec []byte)) error {
	_, lay, err := Schema(eventType, version)
	if err != nil {
		return err
	}
	cols := make([]record.Column, len(lay.Enc.Fields))
	var r FileReader
	for _, name := range files {
		if err := r.ReadFile(ctx, b, name, lay, cols, fn); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// ReadFile is ReadRecords over one file, for a reader that has the layout
// already (Schema) and a slice of len(lay.Enc.Fields) columns to decode
// into; with cols nil the records are not decoded (fn gets nil columns).
func ReadFile(ctx context.Context, b blob.Opener, name string, lay *record.Layout, cols []record.Column, fn func(cols []record.Column, lay *record.Layout, rec []byte)) error {
	var r FileReader
	return r.ReadFile(ctx, b, name, lay, cols, fn)
}

// FileReader reads files one after the other as ReadFile does, reusing
// its buffers (the container's blocks, inflated) from file to file. It is
// not safe for concurrent use.
type FileReader struct {
	or *record.OCFReader
}

// ReadFile is the package's ReadFile, with r's buffers.
func (fr *FileReader) ReadFile(ctx context.Context, b blob.Opener, name string, lay *record.Layout, cols []record.Column, fn func(cols []record.Column, lay *record.Layout, rec []byte)) error {
	skip := lay.Skip()
	if cols != nil {
		// Each record is decoded where it is measured, once.
		var err error
		if skip, err = lay.SkipInto(cols); err != nil {
			return err
		}
	}
	r, err := b.Open(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	if fr.or == nil {
		fr.or = &record.OCFReader{}
	}
	or := fr.or
	if err := or.Reset(r, skip); err != nil {
		return err
	}
	for {
		rec, err := or.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		fn(cols, lay, rec)
	}
}
