package bq

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/insecurekeyset"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// Keyset is a cleartext binary Tink keyset (insecurekeyset.Binary). It
// prints as "[redacted]" in every fmt verb and in JSON, so a KeyRow can be
// logged without leaking key material; Reveal returns the bytes.
type Keyset struct{ b []byte }

// NewKeyset wraps serialized keyset bytes (for tests and readers of the
// keys table).
func NewKeyset(b []byte) Keyset { return Keyset{b: bytes.Clone(b)} }

// Reveal returns the raw keyset bytes.
func (k Keyset) Reveal() []byte { return k.b }

func (Keyset) String() string               { return "[redacted]" }
func (Keyset) GoString() string             { return "bq.Keyset{[redacted]}" }
func (Keyset) Format(f fmt.State, _ rune)   { io.WriteString(f, "[redacted]") }
func (Keyset) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Len is the size of the serialized keyset.
func (k Keyset) Len() int { return len(k.b) }

// KeyRow is one row of the keys table: the Tink keyset of one subject's
// category, for the normal (AEAD, AES-GCM) or the deterministic (AES-SIV)
// fields. Version is the highest key version in the keyset (its primary);
// the keyset holds every live version, so ciphertexts of older versions
// decrypt too.
type KeyRow struct {
	Subject       string
	Category      string
	Version       int
	Keyset        Keyset
	Deterministic bool
}

// KeysTableSchema is the schema of the keys table.
var KeysTableSchema = bigquery.Schema{
	{Name: schemas.MetaSubject, Type: bigquery.StringFieldType, Required: true, Description: "Opaque subject id (the _subject of the event tables)."},
	{Name: "category", Type: bigquery.StringFieldType, Required: true, Description: "PII category of the keyset."},
	{Name: "version", Type: bigquery.IntegerFieldType, Required: true, Description: "Highest (primary) key version in the keyset; the keyset holds every live version."},
	{Name: "keyset", Type: bigquery.BytesFieldType, Required: true, Description: "Cleartext binary Tink keyset for AEAD.DECRYPT_BYTES / DETERMINISTIC_DECRYPT_BYTES. RESTRICTED: raw key material."},
	{Name: "deterministic", Type: bigquery.BooleanFieldType, Required: true, Description: "TRUE: AES-SIV keyset (fields marked deterministic); FALSE: AES-GCM keyset."},
}

// Uses names, per category, which kinds of keyset the schemas need.
type Uses map[string]struct{ AEAD, Deterministic bool }

// KeyUses collects the categories of every encrypted PII field of every
// schema in reg (the subject field is not encrypted: it is dropped).
func KeyUses(reg *schemas.Registry) Uses {
	u := Uses{}
	for _, s := range reg.All() {
		for _, f := range s.Encrypted().Fields {
			if f.PII == nil {
				continue
			}
			x := u[f.PII.Category]
			if f.PII.Deterministic {
				x.Deterministic = true
			} else {
				x.AEAD = true
			}
			u[f.PII.Category] = x
		}
	}
	return u
}

// Categories returns the categories, sorted.
func (u Uses) Categories() []string {
	var out []string
	for c := range u {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// decryptBatch is the most subjects per ForDecrypt call.
const decryptBatch = 500

// KeyRows asks the key service for every live key of every subject and
// builds the keys table rows: one per (subject, category, kind) the schemas
// use. Subjects the service reports deleted or unknown get no row and are
// returned in gone; a revoked category gets no row. Other per-subject errors
// and whole-call errors fail the export (a partial table would shred
// innocent users).
func KeyRows(ctx context.Context, keys keyclient.Keys, uses Uses, subjects []string) (rows []KeyRow, gone []string, err error) {
	subjects = slices.Clone(subjects)
	slices.Sort(subjects)
	subjects = slices.Compact(subjects)
	cats := uses.Categories()
	if len(cats) == 0 {
		return nil, nil, errors.New("bq: no encrypted categories in the schemas")
	}
	for len(subjects) > 0 {
		n := min(decryptBatch, len(subjects))
		batch := subjects[:n]
		subjects = subjects[n:]
		ans, err := keys.ForDecrypt(ctx, batch, cats)
		if err != nil {
			return nil, nil, fmt.Errorf("bq: key service: %w", err)
		}
		if len(ans) != len(batch) {
			return nil, nil, fmt.Errorf("bq: key service answered %d of %d subjects", len(ans), len(batch))
		}
		for i, uk := range ans {
			if uk.Err != nil {
				if errors.Is(uk.Err, keyclient.ErrUserDeleted) || errors.Is(uk.Err, keyclient.ErrUnknownSubject) {
					gone = append(gone, batch[i])
					continue
				}
				return nil, nil, fmt.Errorf("bq: key service, subject %s: %w", batch[i], uk.Err)
			}
			byCat := map[string][]fieldcrypt.CategoryKey{}
			for _, k := range uk.Keys {
				byCat[k.Category] = append(byCat[k.Category], k)
			}
			for _, c := range cats {
				ks := byCat[c]
				if len(ks) == 0 {
					continue // revoked (or never issued): no row, the view shows NULL
				}
				for _, det := range []bool{false, true} {
					if (det && !uses[c].Deterministic) || (!det && !uses[c].AEAD) {
						continue
					}
					row, err := keyRow(batch[i], c, det, ks)
					if err != nil {
						return nil, nil, err
					}
					rows = append(rows, row)
				}
			}
		}
	}
	return rows, gone, nil
}

func keyRow(subject, category string, det bool, ks []fieldcrypt.CategoryKey) (KeyRow, error) {
	build := insecurekeyset.AEAD
	if det {
		build = insecurekeyset.Deterministic
	}
	h, err := build(ks...)
	if err != nil {
		return KeyRow{}, fmt.Errorf("bq: keyset of subject %s, category %s: %w", subject, category, err)
	}
	b, err := insecurekeyset.Binary(h)
	if err != nil {
		return KeyRow{}, fmt.Errorf("bq: keyset of subject %s, category %s: %w", subject, category, err)
	}
	v := 0
	for _, k := range ks {
		v = max(v, k.Version)
	}
	return KeyRow{Subject: subject, Category: category, Version: v, Keyset: Keyset{b: b}, Deterministic: det}, nil
}

// NDJSON renders rows as newline-delimited JSON in the keys table's schema
// (BYTES as standard base64), the body of the keys table's load job.
func NDJSON(rows []KeyRow) []byte {
	var buf bytes.Buffer
	for _, r := range rows {
		line, _ := json.Marshal(struct {
			Subject       string `json:"_subject"`
			Category      string `json:"category"`
			Version       int    `json:"version"`
			Keyset        string `json:"keyset"`
			Deterministic bool   `json:"deterministic"`
		}{r.Subject, r.Category, r.Version, base64.StdEncoding.EncodeToString(r.Keyset.b), r.Deterministic})
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// KeysTable maintains the keys table by truncate-and-reload.
type KeysTable struct {
	Client  *bigquery.Client
	Dataset string
	Table   string
	// MaxAttempts, Backoff and Sleep: as in Loader (same retry rule).
	MaxAttempts int
	Backoff     time.Duration
	Sleep       func(ctx context.Context, d time.Duration) error
}

// Replace replaces the whole keys table with rows in ONE load job: the
// rows are uploaded with the job (never put into SQL text or query
// parameters, which BigQuery keeps in its job history), written with
// WRITE_TRUNCATE and CREATE_IF_NEEDED. The swap is atomic: a query sees the
// old table or the new one. Shredded subjects are simply not in rows.
func (k *KeysTable) Replace(ctx context.Context, rows []KeyRow) (jobID string, err error) {
	if k.Client == nil {
		return "", errors.New("bq: KeysTable.Client is nil")
	}
	if err := checkIDs(k.Client.Project(), k.Dataset, k.Table); err != nil {
		return "", err
	}
	data := NDJSON(rows)
	l := &Loader{Client: k.Client, Dataset: k.Dataset, MaxAttempts: k.MaxAttempts, Backoff: k.Backoff, Sleep: k.Sleep}
	res := &LoadResult{Table: fmt.Sprintf("%s:%s.%s", k.Client.Project(), k.Dataset, k.Table), Records: int64(len(rows))}
	err = l.retry(ctx, res, func() error {
		src := bigquery.NewReaderSource(bytes.NewReader(data))
		src.SourceFormat = bigquery.JSON
		src.Schema = KeysTableSchema
		ld := k.Client.Dataset(k.Dataset).Table(k.Table).LoaderFrom(src)
		ld.WriteDisposition = bigquery.WriteTruncate
		ld.CreateDisposition = bigquery.CreateIfNeeded
		ld.JobID = "lockstream_keys_" + k.Table
		ld.AddJobIDSuffix = true
		ld.Labels = map[string]string{"lockstream": "keys"}
		return l.runJob(ctx, res, ld, "replace keys table")
	})
	return res.JobID, err
}

// PublishedHours lists the published hours (those with _SUCCESS) under
// datasets/ of a bucket, in path order.
func PublishedHours(ctx context.Context, b blob.Bucket) ([]layout.Hour, error) {
	names, err := b.List(ctx, layout.DatasetsArea+"/")
	if err != nil {
		return nil, err
	}
	var out []layout.Hour
	for _, n := range names {
		if !strings.HasSuffix(n, "/"+layout.Success) {
			continue
		}
		area, h, file, ok := layout.ParseDir(n)
		if ok && area == layout.DatasetsArea && file == layout.Success {
			out = append(out, h)
		}
	}
	return out, nil
}

// Subjects returns the distinct _subject values of the given published
// hours, read from the data files of every part (main and supplements).
func Subjects(ctx context.Context, b blob.Bucket, reg *schemas.Registry, hours []layout.Hour) ([]string, error) {
	seen := map[string]bool{}
	for _, h := range hours {
		s, err := reg.Lookup(h.Type, h.Version)
		if err != nil {
			return nil, fmt.Errorf("bq: %s: %w", h, err)
		}
		lay, err := record.NewLayout(s)
		if err != nil {
			return nil, err
		}
		dh, err := readHour(ctx, b, h, s)
		if err != nil {
			return nil, err
		}
		cols := make([]record.Column, len(lay.Enc.Fields))
		var files dataset.FileReader
		for _, f := range dh.Files() {
			err := files.ReadFile(ctx, b, f.Name, lay, cols, func(cols []record.Column, lay *record.Layout, _ []byte) {
				if sub := cols[lay.Subject].Bytes; !seen[string(sub)] {
					seen[string(sub)] = true
				}
			})
			if err != nil {
				return nil, fmt.Errorf("bq: %s: %w", f.Name, err)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}
