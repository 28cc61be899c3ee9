package synth

import (
	"context"
	"testing"

	"github.com/lockstream/lockstream/record"
)

func TestGenerate(t *testing.T) {
	tr := Generate(Config{Events: 2000, Seed: 7})
	again := Generate(Config{Events: 2000, Seed: 7})
	if len(tr.Messages) != len(again.Messages) || string(tr.Messages[10].Data) != string(again.Messages[10].Data) {
		t.Fatal("generation is not deterministic")
	}
	if tr.Duplicates == 0 || tr.Malformed == 0 || tr.Late == 0 {
		t.Fatalf("faults missing: %+v", tr)
	}
	if len(tr.Messages) != tr.Unique+tr.Duplicates+tr.Malformed {
		t.Fatalf("messages %d != unique %d + dup %d + bad %d", len(tr.Messages), tr.Unique, tr.Duplicates, tr.Malformed)
	}
	for i := 1; i < len(tr.Messages); i++ {
		if tr.Messages[i].PublishTime.Before(tr.Messages[i-1].PublishTime) {
			t.Fatal("not in publish order")
		}
	}
	// Every line round-trips through the replay format.
	for _, m := range tr.Messages[:50] {
		line, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := record.ParseLine(line); err != nil {
			t.Fatal(err)
		}
	}
	_ = context.Background()
}
