package integration

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/memcachedstore"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

const shredAdminSecret = "scenario-admin-secret-00001"

// shredNode is one key server over the shared store, with the memcached
// tier and a short stale window.
type shredNode struct {
	svc *keyservice.Service
	srv *httptest.Server
}

func startShredNode(t *testing.T, base keyservice.Store, mc string, window time.Duration, log *lockedBuffer) *shredNode {
	t.Helper()
	tier, err := memcachedstore.New(base, []string{mc}, window, storetest.MasterKey)
	if err != nil {
		t.Fatal(err)
	}
	tier.SetNamespace(t.Name())
	svc, err := keyservice.New(tier, keyservice.Options{MasterKey: storetest.MasterKey, StaleWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	services, err := server.NewServices([]server.ServiceConfig{
		{Name: "pipeline", SecretSHA256: server.HashSecret(scenarioKeySecret), Scopes: []string{"*"}, Categories: []string{"*"}, Mode: server.ModeDecrypt},
		{Name: "ops", SecretSHA256: server.HashSecret(shredAdminSecret), Categories: []string{"*"}, Mode: server.ModeNone, Admin: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Config{Service: svc, Services: services, Audit: log, Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	n := &shredNode{svc: svc, srv: httptest.NewServer(s.Handler())}
	t.Cleanup(n.srv.Close)
	return n
}

// TestScenario08_ShredProof: 100 users with canary PII in both event
// types; 50 are deleted and one category is revoked for 25 others through
// `lockstream keys delete-user|revoke` on one key server. After the stale
// window of the other server (memcached tier in between) and the pipeline
// client's cache TTL, no canary of a shredded user or revoked category
// decrypts — in view, or in the BigQuery keys table the SQL views join —
// while every other canary still does; a restart of the key server and a
// re-run of view change nothing; late events of a deleted user are
// dead-lettered as user_deleted and do not bring the user back.
func TestScenario08_ShredProof(t *testing.T) {
	ctx := context.Background()
	bin := buildCLI(t)
	mc := storetest.Memcached(t)
	const window = 2 * time.Second
	base, err := boltstore.Open(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	logs := &lockedBuffer{}
	admin := startShredNode(t, base, mc, window, logs)
	serving := startShredNode(t, base, mc, window, logs)
	t.Setenv(transforms.KeysSecretEnv, scenarioKeySecret)
	pipelineKeys := func(name string) string {
		kc, err := keyclient.NewRemote(serving.srv.URL, keyclient.Options{Scope: transforms.DefaultKeyScope, Secret: scenarioKeySecret, TTL: window, NegativeTTL: window})
		if err != nil {
			t.Fatal(err)
		}
		return transforms.RegisterKeys(name, kc)
	}

	tr := synth.Generate(synth.Config{Events: 2000, Users: 100, Hours: 1, Seed: 808, DuplicateRate: 0.02, MalformedRate: 0.005})
	// Canaries by user: the user id, e-mail, name, device id, and the IP of each of their events.
	byUser := map[string][]string{}
	device := map[string]string{}
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	var ev schemas.Event
	for _, m := range tr.Messages {
		var p struct {
			User, IP, Email, Device string
		}
		sch, err := reg.Resolve(m.EventType(), m.Attributes[record.AttrSchemaVersion])
		if err != nil || sch.Decode(m.Data, &ev) != nil {
			continue // malformed messages reuse canaries of valid events
		}
		var raw map[string]any
		if json.Unmarshal(m.Data, &raw) != nil {
			continue
		}
		p.User, _ = raw["user_id"].(string)
		p.IP, _ = raw["ip_address"].(string)
		p.Email, _ = raw["email"].(string)
		p.Device, _ = raw["device_id"].(string)
		for _, c := range []string{p.IP, p.Email, p.Device} {
			if c != "" && !slices.Contains(byUser[p.User], c) {
				byUser[p.User] = append(byUser[p.User], c)
			}
		}
		if p.Device != "" {
			device[p.User] = p.Device
		}
	}
	root := t.TempDir()
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, tr.Messages)}, Out: root, KeysURL: pipelineKeys("shred-ingest")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}

	// Shred through the admin CLI on the other server.
	var deleted, revoked, kept []string
	for i, u := range tr.Users {
		switch {
		case i < 50:
			deleted = append(deleted, u)
		case i < 75:
			revoked = append(revoked, u)
		default:
			kept = append(kept, u)
		}
	}
	cli := func(stdin string, args ...string) {
		t.Helper()
		cmd := execCLI(bin, stdin, append(args, "--keys", admin.srv.URL, "--secret", shredAdminSecret)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("lockstream %v: %v\n%s", args, err, out)
		} else {
			logs.Write(out)
		}
	}
	for _, u := range deleted {
		cli(u+"\n", "keys", "delete-user", "-")
	}
	for _, u := range revoked {
		cli(u+"\n", "keys", "revoke", "-", "device")
	}
	time.Sleep(window + 500*time.Millisecond) // the serving node's stale window; the clients' TTL is as long

	var unreadable, readable []string
	for _, u := range deleted {
		unreadable = append(unreadable, byUser[u]...)
	}
	for _, u := range revoked {
		for _, c := range byUser[u] {
			if c == device[u] {
				unreadable = append(unreadable, c)
			} else {
				readable = append(readable, c)
			}
		}
	}
	for _, u := range kept {
		readable = append(readable, byUser[u]...)
	}
	check := func(name, keys string) {
		t.Helper()
		invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "08-shred-" + name, Root: root, Sent: tr.Messages, Canaries: tr.Canaries,
			Logs: logs.Bytes(), Ingest: res.Rows, KeysURL: keys, Readable: readable, Unreadable: unreadable})
	}
	check("after-window", pipelineKeys("shred-view-1"))

	// The BigQuery keys table: no row for a deleted subject, no device row
	// for a revoked one (the views' LEFT JOIN then gives NULL).
	bkt, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	hours, err := bq.PublishedHours(ctx, bkt)
	if err != nil {
		t.Fatal(err)
	}
	subjects, err := bq.Subjects(ctx, bkt, reg, hours)
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := keyclient.NewRemote(serving.srv.URL, keyclient.Options{Scope: transforms.DefaultKeyScope, Secret: scenarioKeySecret})
	rows, gone, err := bq.KeyRows(ctx, kc, bq.KeyUses(reg), subjects)
	if err != nil {
		t.Fatal(err)
	}
	subjectOf := func(u string) string {
		ks, err := admin.svc.Show(ctx, u)
		if err != nil && !errors.Is(err, keyservice.ErrUserDeleted) {
			t.Fatal(err)
		}
		return ks.Subject
	}
	if len(gone) != len(deleted) {
		t.Fatalf("%d subjects gone from the keys table, %d users deleted", len(gone), len(deleted))
	}
	revokedSubjects := map[string]bool{}
	for _, u := range revoked {
		revokedSubjects[subjectOf(u)] = true
	}
	for _, r := range rows {
		if slices.Contains(gone, r.Subject) || (revokedSubjects[r.Subject] && r.Category == "device") {
			t.Fatalf("keys table row for a shredded key: %s %s", r.Subject, r.Category)
		}
	}

	// Restart the serving node (same store); view again: nothing changes.
	serving.srv.Close()
	serving = startShredNode(t, base, mc, window, logs)
	check("after-restart", pipelineKeys("shred-view-2"))

	// Late events of a deleted user: dead-lettered, the user stays deleted.
	pb, err := reg.Lookup("PlaybackEvent", 1)
	if err != nil {
		t.Fatal(err)
	}
	late := []record.Message{synth.FromSchema(pb, 1, deleted[0], time.Now().UTC())}
	late[0].ID = "late-deleted-user"
	lres, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, late)}, Out: root, KeysURL: pipelineKeys("shred-late")})
	if err != nil {
		t.Fatal(err)
	}
	if tot := lres.Totals(); tot.Dead[record.ReasonUserDeleted] != 1 || tot.Written != 0 {
		t.Fatalf("late event of a deleted user: %+v", tot)
	}
	if uk, err := serving.svc.GetOrCreate(ctx, transforms.DefaultKeyScope, []string{deleted[0]}, []string{"device"}); err != nil || !errors.Is(uk[0].Err, keyservice.ErrUserDeleted) {
		t.Fatalf("a deleted user came back: %+v, %v", uk, err)
	}
	if strings.Contains(string(logs.Bytes()), deleted[0]) {
		t.Fatal("a user id is in the logs")
	}
}

// execCLI is the lockstream binary with args and stdin.
func execCLI(bin, stdin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}
