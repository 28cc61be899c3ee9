package transforms

import (
	"context"
	"runtime"

	"github.com/lockstream/lockstream/keyclient"
)

// Slots of the cores, and key sources whose lookups let go of their
// caller's slot while they wait on the network (ingest's slices, view's
// lanes).

// coreSlots has a slot per core: a goroutine anonymizing a slice or
// decrypting a batch holds one while it runs (hold), and lets go of it
// while its key lookup waits on the network (letGo), for another to use.
type coreSlots chan struct{}

// newCoreSlots has a slot per core of the process (GOMAXPROCS).
func newCoreSlots() coreSlots { return make(coreSlots, runtime.GOMAXPROCS(0)) }

// hold waits for a slot and takes it; release gives it back. It fails
// only when ctx ends first.
func (c coreSlots) hold(ctx context.Context) (release func(), err error) {
	select {
	case c <- struct{}{}:
		return func() { <-c }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// letGo runs f with the caller's slot let go, and takes one back before
// it returns. A lookup answered from the key client's cache gives its
// slot up for as long as two channel operations.
func (c coreSlots) letGo(f func()) {
	<-c
	defer func() { c <- struct{}{} }()
	f()
}

// networked reports whether keys's lookups wait on a network
// (keyclient.Client.Networked).
func networked(keys any) bool {
	n, ok := keys.(interface{ Networked() bool })
	return ok && n.Networked()
}

// The optional lookups of record.Anonymizer's and record.Decryptor's key
// sources, which keyclient.Client has: a wrapper must keep them.
type (
	encryptSets interface {
		ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error)
	}
	decryptInto interface {
		ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error)
	}
)

// yieldingKeys is a key source whose lookups let go of their caller's core
// slot while they wait: a slice or lane waiting for the key service leaves
// its core to one that can seal or open.
type yieldingKeys struct {
	keys  keyclient.Keys
	cores coreSlots
}

// yieldingClient is a yieldingKeys over a keyclient.Client, with its
// lookups of a batch's sets of users and into reused room.
type yieldingClient struct {
	yieldingKeys
	c *keyclient.Client
}

// yielding wraps keys for anonymizers and decryptors whose goroutines hold
// a slot of cores, when its lookups wait on a network
// (keyclient.Client.Networked). An in-process key service's lookups are
// CPU work of this process: a slice letting go of its core for one would
// only crowd the cores (ingest of 1M events against the in-process fake:
// 5.4-5.6 s for 7.5-7.7 s of user CPU with the slots let go, 5.0-5.3 s for
// 6.8-7.1 s without).
func yielding(keys keyclient.Keys, cores coreSlots) keyclient.Keys {
	if !networked(keys) {
		return keys
	}
	y := yieldingKeys{keys: keys, cores: cores}
	if c, ok := keys.(*keyclient.Client); ok {
		return yieldingClient{yieldingKeys: y, c: c}
	}
	return y
}

func (y yieldingKeys) ForEncrypt(ctx context.Context, userIDs, categories []string) (out []keyclient.UserKeys, err error) {
	y.cores.letGo(func() { out, err = y.keys.ForEncrypt(ctx, userIDs, categories) })
	return out, err
}

func (y yieldingKeys) ForDecrypt(ctx context.Context, subjects, categories []string) (out []keyclient.UserKeys, err error) {
	y.cores.letGo(func() { out, err = y.keys.ForDecrypt(ctx, subjects, categories) })
	return out, err
}

func (y yieldingClient) ForEncryptSets(ctx context.Context, sets []keyclient.Set) (out [][]keyclient.UserKeys, err error) {
	y.cores.letGo(func() { out, err = y.c.ForEncryptSets(ctx, sets) })
	return out, err
}

func (y yieldingClient) ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) (out []keyclient.UserKeys, err error) {
	y.cores.letGo(func() { out, err = y.c.ForDecryptInto(ctx, a, subjects, categories) })
	return out, err
}
