package local

import (
	"context"
	"errors"
	"testing"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
)

func TestOpenLocalRoundTripAndShred(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(MasterKeyEnv, "")
	if _, err := keyclient.Open(context.Background(), "local:"+dir, keyclient.Options{Scope: "events"}); err == nil {
		t.Fatal("opened without a master key")
	}
	p, created, err := InitMasterKey(dir)
	if err != nil || !created {
		t.Fatalf("init: %v %v", created, err)
	}
	if _, again, _ := InitMasterKey(dir); again {
		t.Fatal("init overwrote the master key")
	}
	_ = p
	ctx := context.Background()
	c, err := keyclient.Open(ctx, "local:"+dir, keyclient.Options{Scope: "events"})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.ForEncrypt(ctx, []string{"canary-local-1", "canary-local-2"}, []string{"contact", "location"})
	if err != nil {
		t.Fatal(err)
	}
	if enc[0].Err != nil || len(enc[0].Keys) != 2 || enc[0].UserID != "canary-local-1" {
		t.Fatalf("encrypt: %+v", enc[0])
	}
	dec, err := c.ForDecrypt(ctx, []string{enc[1].Subject}, []string{"contact"})
	if err != nil || dec[0].UserID != "" || !dec[0].Keys[0].Secret.Equal(enc[1].Keys[0].Secret) {
		t.Fatalf("decrypt: %+v %v", dec, err)
	}
	if _, err := c.ForEncrypt(ctx, []string{""}, []string{"contact"}); !errors.Is(err, keyclient.ErrInvalidArgument) {
		t.Fatalf("empty id: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Shred with the core, reopen: the client reports the user deleted.
	svc := openService(t, dir)
	if err := svc.DeleteUser(ctx, "canary-local-1"); err != nil {
		t.Fatal(err)
	}
	c2, err := New(svc, keyclient.Options{Scope: "events"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c2.ForEncrypt(ctx, []string{"canary-local-1"}, []string{"contact"})
	if err != nil || !errors.Is(res[0].Err, keyclient.ErrUserDeleted) {
		t.Fatalf("after delete: %+v %v", res, err)
	}
	d, err := c2.ForDecrypt(ctx, []string{enc[0].Subject}, []string{"contact"})
	if err != nil || !errors.Is(d[0].Err, keyclient.ErrUserDeleted) {
		t.Fatalf("by subject after delete: %+v %v", d, err)
	}
	svc.Close()
}

// TestPurgeEmptiesTheServiceCache: Client.Purge (transforms.DropKeyCaches
// after an ingest run) empties the in-process service's cache as well as
// its own, and the keys come back the same from the store.
func TestPurgeEmptiesTheServiceCache(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(MasterKeyEnv, "")
	if _, _, err := InitMasterKey(dir); err != nil {
		t.Fatal(err)
	}
	svc := openService(t, dir)
	defer svc.Close()
	c, err := New(svc, keyclient.Options{Scope: "events"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	users := []string{"canary-purge-1", "canary-purge-2", "canary-purge-3"}
	before, err := c.ForEncrypt(ctx, users, []string{"contact"})
	if err != nil {
		t.Fatal(err)
	}
	if n := svc.CacheStats().ProcessEntries; n == 0 {
		t.Fatal("the service cached nothing")
	}
	c.Purge()
	if n, m := svc.CacheStats().ProcessEntries, c.Stats().CacheEntries; n != 0 || m != 0 {
		t.Fatalf("after Purge: service %d rows, client %d users cached", n, m)
	}
	after, err := c.ForEncrypt(ctx, users, []string{"contact"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range users {
		if after[i].Subject != before[i].Subject || !after[i].Keys[0].Secret.Equal(before[i].Keys[0].Secret) {
			t.Fatalf("%s: keys changed across a purge", users[i])
		}
	}
}

// openService opens the service of dir with its master key file.
func openService(t *testing.T, dir string) *keyservice.Service {
	t.Helper()
	mk, err := MasterKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := OpenService(dir, mk, nil)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
