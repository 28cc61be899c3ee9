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
	for _, name := range files {
		if err := ReadFile(ctx, b, name, lay, cols, fn); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// ReadFile is ReadRecords over one file, for a reader that has the layout
// already (Schema) and a slice of len(lay.Enc.Fields) columns to decode
// into; with cols nil the records are not decoded (fn gets nil columns).
func ReadFile(ctx context.Context, b blob.Opener, name string, lay *record.Layout, cols []record.Column, fn func(cols []record.Column, lay *record.Layout, rec []byte)) error {
	r, err := b.Open(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	skip := lay.Skip()
	if cols != nil {
		// Each record is decoded where it is measured, once.
		if skip, err = lay.SkipInto(cols); err != nil {
			return err
		}
	}
	or, err := record.NewOCFReader(r, skip)
	if err != nil {
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
