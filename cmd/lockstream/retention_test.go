package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/rootid"
)

// initLocalKeys makes an embedded key store for the admin commands.
func initLocalKeys(t *testing.T, ctx context.Context) string {
	t.Helper()
	t.Setenv("LOCKSTREAM_MASTER_KEY", "")
	t.Setenv(envKeysURL, "")
	keys := "local:" + filepath.Join(t.TempDir(), "keys")
	if out, err := runCLI(t, ctx, "", "keys", "init", "--keys", keys); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	return keys
}

func TestRetentionCommand(t *testing.T) {
	ctx := context.Background()
	keys := initLocalKeys(t, ctx)
	dir := t.TempDir()
	b, err := blob.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC) // raw past 14 days, dataset within 400
	for _, n := range []string{layout.RawDir("PlaybackEvent", 1, old) + "part-a.avro", layout.DatasetDir("PlaybackEvent", 1, old) + layout.Success} {
		if err := blob.WriteAll(ctx, b, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	raw := layout.RawDir("PlaybackEvent", 1, old) + "part-a.avro"
	out, err := runCLI(t, ctx, "", "retention", "--root", dir, "--now", "2026-03-01T00")
	if err != nil || !strings.Contains(out, "would delete") || !strings.Contains(out, "--apply") || !strings.Contains(out, "dead letters are kept 30 days") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if ok, _ := b.Exists(ctx, raw); !ok {
		t.Fatal("the dry run deleted")
	}
	out, err = runCLI(t, ctx, "", "retention", "--root", dir, "--now", "2026-03-01T00", "--apply", "--keys", keys)
	if err != nil || !strings.Contains(out, "delete ") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if ok, _ := b.Exists(ctx, raw); ok {
		t.Fatal("--apply kept the expired raw hour")
	}
	if ok, _ := b.Exists(ctx, layout.DatasetDir("PlaybackEvent", 1, old)+layout.Success); !ok {
		t.Fatal("a dataset within retention was deleted")
	}
	if _, err := runCLI(t, ctx, "", "retention"); err == nil || !strings.Contains(err.Error(), "--root") {
		t.Fatalf("no root: %v", err)
	}
	if _, err := runCLI(t, ctx, "", "retention", "--root", dir, "--deadletter-days", "-1"); err == nil || !strings.Contains(err.Error(), "--deadletter-days") {
		t.Fatalf("negative --deadletter-days: %v", err)
	}
}

// Dead letters of two days, one expired: --apply without --keys deletes
// nothing; with --keys local:DIR it deletes the expired day and shreds that
// day's dead-letter keychain of this root, and only that one.
func TestRetentionDeadLetterKeysCommand(t *testing.T) {
	ctx := context.Background()
	keys := initLocalKeys(t, ctx)
	dir := t.TempDir()
	b, err := blob.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := rootid.Get(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	day1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day2 := time.Date(2026, 1, 20, 0, 0, 0, 0, time.UTC)
	oldFile := layout.DeadLetterDir("malformed_json", day1.Add(6*time.Hour)) + "b1.ndjson"
	newFile := layout.DeadLetterDir("malformed_json", day2.Add(6*time.Hour)) + "b2.ndjson"
	for _, n := range []string{oldFile, newFile} {
		if err := blob.WriteAll(ctx, b, n, []byte("{}\n")); err != nil {
			t.Fatal(err)
		}
	}
	// The keychains the writer would have created for unknown users.
	user1, user2 := record.DeadLetterUser(id, day1), record.DeadLetterUser(id, day2)
	for _, u := range []string{user1, user2} {
		if out, err := runCLI(t, ctx, u+"\n", "keys", "create-user", "-", "--keys", keys); err != nil {
			t.Fatalf("create-user: %v\n%s", err, out)
		}
	}
	state := func(user string) string {
		t.Helper()
		out, err := runCLI(t, ctx, user+"\n", "keys", "show", "-", "--keys", keys)
		if err != nil {
			t.Fatalf("show: %v\n%s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "state" {
				return f[1]
			}
		}
		t.Fatalf("no state in\n%s", out)
		return ""
	}

	// AccountUpdate's 30 raw days: day 1 expired on Jan 31, day 2 not yet.
	now := "2026-02-10T00"
	out, err := runCLI(t, ctx, "", "retention", "--root", dir, "--now", now)
	if err != nil || !strings.Contains(out, "would shred") || !strings.Contains(out, "2026-01-01") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	_, err = runCLI(t, ctx, "", "retention", "--root", dir, "--now", now, "--apply")
	if err == nil || !strings.Contains(err.Error(), "--apply needs --keys") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("--apply without --keys: %v", err)
	}
	if ok, _ := b.Exists(ctx, oldFile); !ok || state(user1) != "active" {
		t.Fatal("--apply without --keys deleted or shredded something")
	}

	out, err = runCLI(t, ctx, "", "retention", "--root", dir, "--now", now, "--apply", "--keys", keys)
	if err != nil || !strings.Contains(out, "shredded the dead-letter key of 2026-01-01") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if ok, _ := b.Exists(ctx, oldFile); ok {
		t.Fatal("the expired dead letter is still there")
	}
	if ok, _ := b.Exists(ctx, newFile); !ok {
		t.Fatal("a dead letter within retention was deleted")
	}
	if s1, s2 := state(user1), state(user2); s1 != "deleted" || s2 != "active" {
		t.Fatalf("dead-letter keychains: expired day %s (want deleted), kept day %s (want active)", s1, s2)
	}

	// --deadletter-days 1 expires day 2 as well; its keychain goes, and a
	// keychain that never existed (or is gone) is no error.
	if err := blob.WriteAll(ctx, b, layout.DeadLetterDir("oversized", day1.Add(30*24*time.Hour))+"b3.ndjson", []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, ctx, "", "retention", "--root", dir, "--now", now, "--apply", "--keys", keys, "--deadletter-days", "1")
	if err != nil || !strings.Contains(out, "shredded the dead-letter key of 2026-01-20") || !strings.Contains(out, "shredded the dead-letter key of 2026-01-31") {
		t.Fatalf("apply with --deadletter-days 1: %v\n%s", err, out)
	}
	if state(user2) != "deleted" {
		t.Fatal("day 2's keychain survived")
	}
}
