package bqtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// Published is one hour written by Publish, with the outcomes in it.
type Published struct {
	Hour     layout.Hour
	Part     string // layout.MainPart or a supplement
	Outcomes []record.Outcome
}

// Publish anonymizes msgs and writes every (type, version, hour) of the
// accepted ones as a published dataset hour — part-00000.avro (OCF, snappy, as lockstream writes),
// _MANIFEST.json and _SUCCESS — the way `hourly` lays it out. It is a test
// stand-in for the hourly pipeline (no dedupe, no raw area); it fails if a
// message is rejected.
func Publish(ctx context.Context, b blob.Bucket, reg *schemas.Registry, a *record.Anonymizer, msgs []record.Message) ([]Published, error) {
	return PublishPart(ctx, b, reg, a, msgs, layout.MainPart)
}

// PublishPart is Publish for one part of the hours: layout.MainPart, or a
// late supplement (layout.SupplementPart(n)) written into
// <hour>/late-000n/ with its own _MANIFEST.json (format 2, the part named,
// its records counted as late input) and _SUCCESS. It does not check that
// the hour's main part exists, nor dedupe against it.
func PublishPart(ctx context.Context, b blob.Bucket, reg *schemas.Registry, a *record.Anonymizer, msgs []record.Message, part string) ([]Published, error) {
	if _, ok := layout.ParseSupplementPart(part); !ok && part != layout.MainPart {
		return nil, fmt.Errorf("bqtest: part %q is neither %q nor a supplement", part, layout.MainPart)
	}
	outs, err := a.Anonymize(ctx, msgs)
	if err != nil {
		return nil, err
	}
	byHour := map[layout.Hour][]record.Outcome{}
	for i, o := range outs {
		if o.Reject != nil {
			return nil, fmt.Errorf("bqtest: message %d rejected: %s at %s", i, o.Reject.Reason, o.Reject.Path)
		}
		h := layout.Hour{Type: o.EventType, Version: o.Version, Hour: o.Hour}
		byHour[h] = append(byHour[h], o)
	}
	var hours []layout.Hour
	for h := range byHour {
		hours = append(hours, h)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].String() < hours[j].String() })
	var res []Published
	for _, h := range hours {
		s, err := reg.Lookup(h.Type, h.Version)
		if err != nil {
			return nil, err
		}
		dir := layout.PartDir(h.Type, h.Version, h.Hour, part)
		const name = "part-00000.avro"
		var buf bytes.Buffer
		w, err := record.NewOCFWriter(&buf, s.Encrypted().JSON, record.SyncMarker(dir+name), record.CodecSnappy)
		if err != nil {
			return nil, err
		}
		for _, o := range byHour[h] {
			if err := w.Append(o.Record); err != nil {
				return nil, err
			}
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(buf.Bytes())
		n := int64(len(byHour[h]))
		man := layout.ManifestDoc{FormatVersion: 1, EventType: h.Type, SchemaVersion: h.Version, Hour: layout.FormatHour(h.Hour),
			SchemaFingerprint: s.Encrypted().Fingerprint, Records: n,
			Files:   []layout.ManifestFile{{Name: name, Records: n, Bytes: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:])}},
			Input:   layout.Accounting{RawFiles: 1, RawRecords: n, Published: n},
			Lineage: layout.Lineage{InputHours: []string{layout.FormatHour(h.Hour)}, CodeVersion: "bqtest"}}
		if part != layout.MainPart {
			man.FormatVersion, man.Part, man.RunID, man.PublishedAt = layout.ManifestFormatVersion, part, "bqtest", time.Now().UTC()
			man.Input.RawRecords, man.Input.LateRecords = 0, n
		}
		mj, _ := json.MarshalIndent(man, "", "  ")
		for _, f := range []struct {
			name string
			data []byte
		}{{dir + name, buf.Bytes()}, {dir + layout.Manifest, mj}, {dir + layout.Success, nil}} {
			if err := blob.WriteAll(ctx, b, f.name, f.data); err != nil {
				return nil, err
			}
		}
		res = append(res, Published{Hour: h, Part: part, Outcomes: byHour[h]})
	}
	return res, nil
}
