package transforms

import (
	"context"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/record"
)

// Slots of the cores, and key sources whose lookups let go of their
// caller's slot while they wait on the network (ingest's slices, view's
// lanes).

// yieldingKeys is a key source whose lookups let go of their caller's slot
// of cores (batchWriter.cores) while they wait, and take one back before
// they return: a slice waiting for the key service leaves its core to a
// slice that can seal. A lookup answered from the key client's cache gives
// its slot up for as long as two channel operations.
type yieldingKeys struct {
	keys  record.Keys
	cores chan struct{}
}

// yieldingSets is a yieldingKeys over a source that answers sets of users
// in one lookup (keyclient.Client.ForEncryptSets), which record.Anonymizer
// uses when its key source has it.
type yieldingSets struct {
	yieldingKeys
	sets interface {
		ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error)
	}
}

// yielding wraps keys for anonymizers whose slices hold a slot of cores,
// when its lookups wait on a network (keyclient.Client.Networked). An
// in-process key service's lookups are CPU work of this process: a slice
// letting go of its core for one would only crowd the cores (ingest of 1M
// events against the in-process fake: 5.4-5.6 s for 7.5-7.7 s of user CPU
// with the slots let go, 5.0-5.3 s for 6.8-7.1 s without).
func yielding(keys record.Keys, cores chan struct{}) record.Keys {
	if !networked(keys) {
		return keys
	}
	y := yieldingKeys{keys: keys, cores: cores}
	if s, ok := keys.(interface {
		ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error)
	}); ok {
		return yieldingSets{yieldingKeys: y, sets: s}
	}
	return y
}

// networked reports whether keys's lookups wait on a network
// (keyclient.Client.Networked).
func networked(keys any) bool {
	n, ok := keys.(interface{ Networked() bool })
	return ok && n.Networked()
}

// yieldingDecryptKeys is yieldingKeys for a view's lanes.
type yieldingDecryptKeys struct {
	keys  record.DecryptKeys
	cores chan struct{}
}

// yieldingDecryptInto is a yieldingDecryptKeys over a source that answers
// into room its caller reuses (keyclient.Client.ForDecryptInto), which
// record.Decryptor uses when its key source has it.
type yieldingDecryptInto struct {
	yieldingDecryptKeys
	into interface {
		ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error)
	}
}

// yieldingDecrypt wraps keys for decryptors whose lanes hold a slot of
// cores, when its lookups wait on a network.
func yieldingDecrypt(keys record.DecryptKeys, cores chan struct{}) record.DecryptKeys {
	if !networked(keys) {
		return keys
	}
	y := yieldingDecryptKeys{keys: keys, cores: cores}
	if in, ok := keys.(interface {
		ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error)
	}); ok {
		return yieldingDecryptInto{yieldingDecryptKeys: y, into: in}
	}
	return y
}

func (y yieldingDecryptKeys) ForDecrypt(ctx context.Context, subjects, categories []string) ([]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.keys.ForDecrypt(ctx, subjects, categories)
}

func (y yieldingDecryptInto) ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.into.ForDecryptInto(ctx, a, subjects, categories)
}

func (y yieldingKeys) ForEncrypt(ctx context.Context, userIDs, categories []string) ([]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.keys.ForEncrypt(ctx, userIDs, categories)
}

func (y yieldingSets) ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error) {
	<-y.cores
	defer func() { y.cores <- struct{}{} }()
	return y.sets.ForEncryptSets(ctx, sets)
}
