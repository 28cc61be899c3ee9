package bq

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// ViewLoad loads a decrypted copy written by `lockstream view --format
// avro` into a restricted table that expires: the table (created with the
// decrypted schema if missing) gets ExpirationTime = now + Expiration, and
// one load job replaces its content (WRITE_TRUNCATE), so a re-run never
// duplicates rows. Shredded users' PII is already null in the copy.
type ViewLoad struct {
	Client     *bigquery.Client
	Table      TableRef
	Schema     *schemas.Schema // the event type and version of the copy
	Expiration time.Duration   // > 0
	Now        func() time.Time
}

// Load loads the Avro copy from src: a gs:// URI, or a reader of the file.
func (v *ViewLoad) Load(ctx context.Context, gcsURI string, file io.Reader) (jobID string, rows int64, err error) {
	if v.Expiration <= 0 {
		return "", 0, fmt.Errorf("bq: a decrypted copy needs an expiration")
	}
	if err := checkIDs(v.Table.Project, v.Table.Dataset, v.Table.Table); err != nil {
		return "", 0, err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	avroSchema, err := record.ViewSchema(v.Schema)
	if err != nil {
		return "", 0, err
	}
	schema, err := TableSchema(avroSchema)
	if err != nil {
		return "", 0, err
	}
	expires := now().Add(v.Expiration)
	t := v.Client.DatasetInProject(v.Table.Project, v.Table.Dataset).Table(v.Table.Table)
	desc := fmt.Sprintf("Decrypted copy of %s (lockstream view): plaintext PII, restricted; expires %s.", v.Schema, expires.UTC().Format(time.RFC3339))
	md, err := t.Metadata(ctx)
	switch {
	case isStatus(err, http.StatusNotFound):
		err = t.Create(ctx, &bigquery.TableMetadata{Schema: schema, ExpirationTime: expires, Description: desc,
			Labels: map[string]string{"lockstream": "decrypted-copy"}})
	case err == nil:
		_, err = t.Update(ctx, bigquery.TableMetadataToUpdate{ExpirationTime: expires, Description: desc}, md.ETag)
	}
	if err != nil {
		return "", 0, fmt.Errorf("bq: table %s: %w", v.Table.quoted(), err)
	}
	var src bigquery.LoadSource
	if gcsURI != "" {
		ref := bigquery.NewGCSReference(gcsURI)
		ref.SourceFormat = bigquery.Avro
		src = ref
	} else {
		rs := bigquery.NewReaderSource(file)
		rs.SourceFormat = bigquery.Avro
		src = rs
	}
	ld := t.LoaderFrom(src)
	ld.WriteDisposition = bigquery.WriteTruncate
	ld.CreateDisposition = bigquery.CreateNever
	ld.UseAvroLogicalTypes = true
	ld.Labels = map[string]string{"lockstream": "decrypted-copy"}
	job, err := ld.Run(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("bq: load %s: %w", v.Table.quoted(), err)
	}
	st, err := job.Wait(ctx)
	if err != nil {
		return job.ID(), 0, fmt.Errorf("bq: load %s: job %s: %w", v.Table.quoted(), job.ID(), err)
	}
	if err := st.Err(); err != nil {
		return job.ID(), 0, &JobError{JobID: job.ID(), Table: v.Table.quoted(), Attempt: 1, Errors: st.Errors, Result: &bigquery.Error{Message: err.Error()}}
	}
	if st.Statistics != nil {
		if ls, ok := st.Statistics.Details.(*bigquery.LoadStatistics); ok {
			rows = ls.OutputRows
		}
	}
	return job.ID(), rows, nil
}
