package layout

import (
	"testing"
	"time"
)

func TestRedriveLedgerNames(t *testing.T) {
	h := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	dl := DeadLetterDir("unknown_version", h) + "batch-1.ndjson"
	name := RedriveLedger(dl, 3)
	if want := "redrive/unknown_version/2026-11-23/06/batch-1.ndjson.0003.json"; name != want {
		t.Fatalf("ledger %q, want %q", name, want)
	}
	if got := RedriveLedgerDir("unknown_version", h); got+"batch-1.ndjson.0003.json" != name {
		t.Fatalf("ledger dir %q", got)
	}
	back, n, ok := ParseRedriveLedger(name)
	if !ok || back != dl || n != 3 {
		t.Fatalf("parsed %q %d %v", back, n, ok)
	}
	for _, bad := range []string{"redrive/x.json", "redrive/r/2026-11-23/06/f.0000.json", "redrive/r/2026-11-23/06/f.12.json",
		"deadletter/r/2026-11-23/06/f.0001.json", "redrive/r/2026-11-23/06/f.0001", "redrive/r/../06/f.0001.json"} {
		if _, _, ok := ParseRedriveLedger(bad); ok {
			t.Errorf("%q parsed as a ledger entry", bad)
		}
	}
}
