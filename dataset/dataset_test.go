package dataset

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// publishPart writes a part's manifest (consuming parts) and, if done, its
// _SUCCESS.
func publishPart(t *testing.T, b blob.Bucket, part string, consumed []string, done bool) {
	t.Helper()
	ctx := context.Background()
	dir := layout.PartDir(testHour.Type, testHour.Version, testHour.Hour, part)
	m := layout.ManifestDoc{FormatVersion: layout.ManifestFormatVersion, EventType: testHour.Type, SchemaVersion: 1,
		Hour: layout.FormatHour(testHour.Hour), Part: part, Parts: consumed,
		Files: []layout.ManifestFile{{Name: "part-00000-of-00001.avro", Records: 1, Bytes: 1, SHA256: "x"}}, Records: 1}
	data, _ := json.Marshal(m)
	if err := blob.WriteAll(ctx, b, dir+layout.Manifest, data); err != nil {
		t.Fatal(err)
	}
	if done {
		if err := blob.WriteAll(ctx, b, dir+layout.Success, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadAndPending(t *testing.T) {
	ctx := context.Background()
	b, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw := layout.RawDir(testHour.Type, 1, testHour.Hour)
	late := layout.LateDir(testHour.Type, 1, testHour.Hour)
	for _, n := range []string{raw + "part-a.avro", raw + "part-b.avro", late + "part-c.avro", late + "part-d.avro", raw + "part-e.avro", raw + layout.Complete} {
		if err := blob.WriteAll(ctx, b, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	h, err := Read(ctx, b, testHour)
	if err != nil || h.Published() {
		t.Fatalf("nothing published yet: %+v %v", h, err)
	}
	// A supplement without its main part does not count.
	publishPart(t, b, layout.SupplementPart(1), []string{late + "part-c.avro"}, true)
	if h, _ := Read(ctx, b, testHour); h.Published() {
		t.Fatal("a supplement alone reads as published")
	}
	publishPart(t, b, layout.MainPart, []string{raw + "part-a.avro", raw + "part-b.avro"}, true)
	publishPart(t, b, layout.SupplementPart(2), []string{late + "part-d.avro"}, false) // unfinished
	h, err = ReadPublished(ctx, b, testHour)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range h.Parts {
		names = append(names, p.Name)
	}
	if !slices.Equal(names, []string{"main", "late-0001"}) || h.Supplements() != 1 || h.Records() != 2 {
		t.Fatalf("parts %v, %d supplements, %d records", names, h.Supplements(), h.Records())
	}
	if f := h.Files(); len(f) != 2 || f[1].Name != layout.PartDir(testHour.Type, 1, testHour.Hour, "late-0001")+"part-00000-of-00001.avro" {
		t.Fatalf("files %+v", f)
	}
	pending, err := Pending(ctx, b, h)
	if err != nil {
		t.Fatal(err)
	}
	// part-d's supplement is unfinished, part-e arrived after the main part.
	if want := []string{late + "part-d.avro", raw + "part-e.avro"}; !slices.Equal(pending, want) {
		t.Fatalf("pending %v, want %v", pending, want)
	}
}
