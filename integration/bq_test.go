package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyclient/local"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// buildCLI builds cmd/lockstream once per test binary run.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lockstream")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/lockstream/lockstream/cmd/lockstream")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/lockstream: %v\n%s", err, out)
	}
	return bin
}

func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "GOOGLE_CLOUD_PROJECT=")
	err := cmd.Run()
	return out.String(), err
}

func bqMsg(typ, id, user, payload string, pub time.Time) record.Message {
	return record.Message{ID: "m-" + id, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: typ, record.AttrSchemaVersion: "1"},
		Data:       []byte(fmt.Sprintf(payload, id, user))}
}

// TestBQCommandsEndToEnd runs the real CLI against the embedded key service
// (local:DIR) and the recording BigQuery server: published hours are loaded
// once (a re-run issues no job), the keys table is replaced with the keys of
// the subjects found in the files, a shred removes the user's rows at the
// next export, and the views are created.
func TestBQCommandsEndToEnd(t *testing.T) {
	if os.Getenv("LOCKSTREAM_SKIP_CLI_BUILD") != "" {
		t.Skip("LOCKSTREAM_SKIP_CLI_BUILD set")
	}
	ctx := context.Background()
	bin := buildCLI(t)
	keysDir, root := t.TempDir(), t.TempDir()
	if _, _, err := local.InitMasterKey(keysDir); err != nil {
		t.Fatal(err)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	// Publish two hours of two types with the real key service.
	kc, err := keyclient.Open(ctx, "local:"+keysDir, keyclient.Options{Scope: "lockstream"})
	if err != nil {
		t.Fatal(err)
	}
	an, err := record.NewAnonymizer(reg, kc, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := blob.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	h06 := time.Date(2026, 11, 23, 6, 10, 0, 0, time.UTC)
	const pb = `{"event_id":%q,"user_id":%q,"timestamp":"2026-11-23T06:11:59.000Z","track_id":"t1","ms_played":1,"country":"SE","ip_address":"203.0.113.7","device_id":"d"}`
	const au = `{"event_id":%q,"user_id":%q,"timestamp":1795414320000,"email":"x@example.com","display_name":"X","birth_year":1990}`
	pubs, err := bqtest.Publish(ctx, b, reg, an, []record.Message{
		bqMsg("PlaybackEvent", "p1", "alice", pb, h06),
		bqMsg("PlaybackEvent", "p2", "bob", pb, h06.Add(time.Hour)),
		bqMsg("AccountUpdate", "a1", "alice", au, h06),
	})
	if err != nil || len(pubs) != 3 {
		t.Fatal(pubs, err)
	}
	alice := pubs[0].Outcomes[0].Subject
	kc.Close() // the bolt store is one process at a time

	srv := bqtest.NewServer(t)
	common := []string{"--project", "lockstream-test", "--bigquery-endpoint", srv.URL}

	// Load: three hours, three jobs; WRITE_TRUNCATE into hour partitions.
	out, err := run(t, bin, append([]string{"bq", "load", "--root", root, "--gcs-root", "gs://bkt/ls", "--bigquery-dataset", "events", "--backoff", "1ms"}, common...)...)
	if err != nil {
		t.Fatalf("bq load: %v\n%s", err, out)
	}
	jobs := srv.Jobs()
	if len(jobs) != 3 || strings.Count(out, "loaded ") != 3 {
		t.Fatalf("%d jobs\n%s", len(jobs), out)
	}
	dests := map[string]bool{}
	for _, j := range jobs {
		ld := j.Configuration.Load
		dests[ld.DestinationTable.TableId] = true
		if ld.WriteDisposition != "WRITE_TRUNCATE" || ld.SourceFormat != "AVRO" || !ld.UseAvroLogicalTypes || !strings.HasPrefix(ld.SourceUris[0], "gs://bkt/ls/datasets/") {
			t.Fatalf("load job %+v", ld)
		}
	}
	for _, d := range []string{"PlaybackEvent_v1$2026112306", "PlaybackEvent_v1$2026112307", "AccountUpdate_v1$2026112306"} {
		if !dests[d] {
			t.Fatalf("no job into %s (%v)", d, dests)
		}
	}
	srv.Reset()
	out, err = run(t, bin, append([]string{"bq", "load", "--root", root, "--gcs-root", "gs://bkt/ls", "--bigquery-dataset", "events"}, common...)...)
	if err != nil || strings.Count(out, "skipped ") != 3 || len(srv.Requests()) != 0 {
		t.Fatalf("re-run: %v, %d requests\n%s", err, len(srv.Requests()), out)
	}

	// Export keys: both subjects, one row per (category, kind of keyset)
	// the schemas use (a category with deterministic fields has an AES-SIV
	// keyset besides its AES-GCM one).
	cats := 0
	for _, use := range bq.KeyUses(reg) {
		if use.AEAD {
			cats++
		}
		if use.Deterministic {
			cats++
		}
	}
	exportArgs := append([]string{"bq", "export-keys", "--root", root, "--keys-table", "restricted.lockstream_keys", "--keys", "local:" + keysDir}, common...)
	out, err = run(t, bin, exportArgs...)
	if err != nil {
		t.Fatalf("export-keys: %v\n%s", err, out)
	}
	up := srv.Requests()
	if len(up) < 2 || up[0].Op != "jobs.insert" || up[0].Job.Configuration.Load.WriteDisposition != "WRITE_TRUNCATE" || strings.Count(string(up[0].Media), "\n") != 2*cats {
		t.Fatalf("export: %v\n%s", srv.Ops(), out)
	}
	if !strings.Contains(string(up[0].Media), alice) {
		t.Fatal("alice has no keys rows")
	}

	// Shred alice in the key service; the next export drops her rows.
	mk, err := local.MasterKey(keysDir, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := local.OpenService(keysDir, mk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	srv.Reset()
	out, err = run(t, bin, exportArgs...)
	if err != nil || !strings.Contains(out, "1 subjects deleted or unknown") {
		t.Fatalf("export after shred: %v\n%s", err, out)
	}
	body := string(srv.Requests()[0].Media)
	if strings.Contains(body, alice) || strings.Count(body, "\n") != cats {
		t.Fatalf("after shred the keys table would be:\n%s", body)
	}
	if strings.Contains(out, "alice") {
		t.Fatal("CLI output names the user")
	}

	// Views.
	srv.Reset()
	out, err = run(t, bin, append([]string{"bq", "views", "--bigquery-dataset", "events", "--keys-table", "restricted.lockstream_keys"}, common...)...)
	if err != nil || strings.Count(out, "view ") != len(reg.Types()) {
		t.Fatalf("views: %v\n%s", err, out)
	}
	for _, r := range srv.Requests() {
		if r.Op == "tables.insert" && (r.Table.View == nil || !strings.Contains(r.Table.View.Query, "SAFE.AEAD.DECRYPT_BYTES(k_")) {
			t.Fatalf("view %s", r.Body)
		}
	}
}
