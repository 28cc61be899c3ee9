package keyservice

import (
	"encoding/json"
	"fmt"
	"time"
)

// Row keys. The store holds three kinds of rows (format version 1):
//
//	uid_<hex HMAC-SHA256(index key, user id)>  indexRow: the user's _subject, or a tombstone
//	sub_<_subject>                             keychainRow: sealed root keys, revocations, or a tombstone
//	pol_<category>                             policyRow: current and minimum key version
//	meta_master_check                          a value sealed under the master key (detects a wrong key)
const (
	prefixUser    = "uid_"
	prefixSubject = "sub_"
	prefixPolicy  = "pol_"
	keyCheck      = "meta_master_check"
	rowFormat     = 1
)

type indexRow struct {
	V       int        `json:"v"`
	Subject string     `json:"subject,omitempty"`
	Deleted *time.Time `json:"deleted,omitempty"` // tombstone: no subject, nothing else
}

type keychainRow struct {
	V       int                       `json:"v"`
	UID     string                    `json:"uid,omitempty"` // HMAC of the user id (to tombstone the index on DeleteSubject)
	Created time.Time                 `json:"created,omitzero"`
	Deleted *time.Time                `json:"deleted,omitempty"`
	Roots   map[string]map[int][]byte `json:"roots,omitempty"` // category -> version -> sealed root key
	Revoked map[string]time.Time      `json:"revoked,omitempty"`
}

type policyRow struct {
	V       int `json:"v"`
	Current int `json:"current"`
	Min     int `json:"min"`
}

func decodeRow(it Item, v any) error {
	if err := json.Unmarshal(it.Value, v); err != nil {
		return fmt.Errorf("keyservice: row %.4s…: undecodable (%v)", it.Key, err)
	}
	return nil
}

func encodeRow(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs: cannot fail
	}
	return b
}
