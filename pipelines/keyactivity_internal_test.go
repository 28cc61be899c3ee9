package pipelines

import (
	"strings"
	"testing"
)

// TestKeyActivityLine: ingest's table ends with what the key caches did,
// when a key client counted anything.
func TestKeyActivityLine(t *testing.T) {
	k := KeyActivity{Lookups: 1000, CacheHits: 950, Calls: 3, CipherHits: 2250, CiphersBuilt: 250}
	want := "keys: 1000 user lookups, 95.0% from the workers' caches, 3 key-service calls; ciphers: 250 built, 90.0% of uses already built"
	if got := k.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	var b strings.Builder
	(&IngestResult{RunID: "r", Keys: k}).WriteTable(&b)
	if !strings.HasSuffix(b.String(), want+"\n") {
		t.Errorf("the table does not end with the keys line:\n%s", b.String())
	}
	b.Reset()
	(&IngestResult{RunID: "r"}).WriteTable(&b)
	if strings.Contains(b.String(), "keys:") {
		t.Errorf("a keys line without lookups:\n%s", b.String())
	}
}
