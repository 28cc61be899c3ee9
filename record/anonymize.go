package record

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/schemas"
)

// Reasons of rejections that come from this package rather than from schema
// validation (those are schemas.Reason*).
const (
	ReasonUserDeleted    = "user_deleted"    // the user's keychain was shredded; policy forbids a new one
	ReasonKeyUnavailable = "key_unavailable" // the key service did not answer within the retry budget
	ReasonBadMessage     = "bad_message"     // a replay line that is not a message at all
)

// PayloadCategory is the key category that seals the payload of a
// dead-lettered message, so that it can be replayed after a fix and still
// dies with the user's keychain.
const PayloadCategory = "payload"

// deadLetterUserPrefix starts the synthetic user ids (DeadLetterUser) of the
// keychains that seal dead letters whose user cannot be told.
const deadLetterUserPrefix = "lockstream:deadletter:"

// MaxDeadLetterScope bounds Options.DeadLetterScope in bytes, so that a
// dead-letter user id stays far below the key service's user id limit.
const MaxDeadLetterScope = 128

// DeadLetterUser is the synthetic user id of the keychain that seals the
// dead letters of one output root (scope: its root id, see package rootid)
// and one UTC day whose user cannot be told:
// "lockstream:deadletter:<scope>:<YYYY-MM-DD>". Deleting that keychain
// (lockstream retention --apply does, when it deletes the last of the
// day's dead letters) shreds them. The day is the UTC day of t.
func DeadLetterUser(scope string, t time.Time) string {
	return deadLetterUserPrefix + scope + ":" + t.UTC().Format("2006-01-02")
}

// DefaultMaxPayload is the default largest payload accepted (1 MiB).
const DefaultMaxPayload = 1 << 20

// Keys is what the anonymizer needs from the key service; keyclient.Keys
// satisfies it.
type Keys interface {
	ForEncrypt(ctx context.Context, userIDs, categories []string) ([]keyclient.UserKeys, error)
}

// Outcome is the result of one message.
type Outcome struct {
	MessageID   string
	EventType   string // "" when unknown
	Version     int    // 0 when unknown
	EventID     string // the dedupe key (not personal)
	Subject     string // the user's _subject ("" when unknown)
	PublishTime time.Time
	Hour        time.Time
	Record      []byte     // Avro binary of the encrypted record; nil when rejected
	Reject      *Rejection // nil when accepted
}

// Rejection describes a dead-lettered message (one line of a dead-letter
// file; the format is in the package doc). It never holds plaintext: only
// the contract attributes (event_type, schema_version) are in clear; the
// payload and every other attribute are kept only sealed, under the user's
// "payload" key, or the dead-letter key of the root and day
// (DeadLetterUser) when the user is unknown. What nothing could seal is
// dropped: the payload, and the other attributes (counted in
// AttributesDropped).
type Rejection struct {
	Reason      string    `json:"reason"`
	Path        string    `json:"path,omitempty"`
	Rule        string    `json:"rule,omitempty"`
	MessageID   string    `json:"message_id"`
	PublishTime time.Time `json:"publish_time"`
	// Attributes holds only the contract attributes (AttrEventType,
	// AttrSchemaVersion) the message had.
	Attributes        map[string]string `json:"attributes,omitempty"`
	Subject           string            `json:"subject,omitempty"`
	PayloadCiphertext []byte            `json:"payload_ciphertext,omitempty"`
	PayloadAAD        string            `json:"payload_aad,omitempty"`
	// AttributesCiphertext seals the JSON object of the message's other
	// attributes, under the payload's key, with AAD AttributesAAD.
	AttributesCiphertext []byte `json:"attributes_ciphertext,omitempty"`
	AttributesAAD        string `json:"attributes_aad,omitempty"`
	// AttributesDropped counts the other attributes that nothing could seal
	// (their names are not kept either: producers choose them).
	AttributesDropped int `json:"attributes_dropped,omitempty"`
}

// Options configure an Anonymizer.
type Options struct {
	MaxPayload int               // bytes; 0 means DefaultMaxPayload
	Ciphers    *fieldcrypt.Cache // shared cipher cache; nil makes a private one
	// DeadLetterScope names the output root the dead letters go to (its
	// root id, package rootid): dead letters whose user is unknown are
	// sealed under the keychain DeadLetterUser(DeadLetterScope, day), one
	// per root and UTC day. Pipelines always set it; "" (unit tests) gives
	// one keychain per day for every Anonymizer without a scope. At most
	// MaxDeadLetterScope bytes.
	DeadLetterScope string
}

// Anonymizer turns input messages into encrypted records. Keys and the
// cipher cache may be shared; an Anonymizer itself reuses buffers and is for
// one goroutine at a time (one per DoFn instance).
type Anonymizer struct {
	reg     *schemas.Registry
	keys    Keys
	ciphers *fieldcrypt.Cache
	max     int
	scope   string

	events  []schemas.Event
	schemas []*schemas.Schema
	aad     []byte
	pt      []byte
	// carried counts the batch's ciphers answered from carried keys, added
	// to the cipher cache's hits once Anonymize returns.
	carried uint64
	// Each category met gets a bit (the first 64; a schema with one past
	// them needs every category of a batch), each schema its set of them,
	// once: a batch's users' sets are ORs, not string compares per event.
	catNames   []string
	schemaCats map[*schemas.Schema]*schemaCats
	batch      int // stamps the schemas met in a batch (schemaCats.batch)
	// answers is the room the key source answers a batch's keys into, one
	// per set of categories: they are used up by the time Anonymize returns.
	answers  []*keyclient.Answers
	answered []*keyclient.UserKeys // per user of a batch: its answer
	need     []uint64              // per user of a batch: its categories
	// lookup's room: the sets of categories (bits of a batch's) and their
	// users, side by side.
	sets                map[uint64]int
	asks                []keyclient.Set
	payAnswers          *keyclient.Answers // the batch's rejections' payload keys
	owner               []int              // per message: whose payload key seals its rejection (rejectedOwners)
	ownerIdx            map[string]int
	masks               []uint64
	starts, next, order []int
	ids                 []string
}

// keySets is a Keys that answers sets of users, each user with a subset
// of the categories it fetches, in one lookup
// (keyclient.Client.ForEncryptSets).
type keySets interface {
	ForEncryptSets(ctx context.Context, sets []keyclient.Set) ([][]keyclient.UserKeys, error)
}

// schemaCats is the categories of one schema's PII fields, as names and
// as bits (Anonymizer.catNames), and the last batch that met the schema.
type schemaCats struct {
	cats  []string
	mask  uint64
	batch int
}

// catsOf returns s's categories (built on first use).
func (a *Anonymizer) catsOf(s *schemas.Schema) *schemaCats {
	if sc, ok := a.schemaCats[s]; ok {
		return sc
	}
	sc := &schemaCats{cats: s.Categories()}
	for _, c := range sc.cats {
		b := slices.Index(a.catNames, c)
		if b < 0 {
			b = len(a.catNames)
			a.catNames = append(a.catNames, c)
		}
		if b < 64 {
			sc.mask |= 1 << b
		} else {
			sc.mask = ^uint64(0)
		}
	}
	if a.schemaCats == nil {
		a.schemaCats = map[*schemas.Schema]*schemaCats{}
	}
	a.schemaCats[s] = sc
	return sc
}

// NewAnonymizer builds an anonymizer over a schema registry and a key source.
func NewAnonymizer(reg *schemas.Registry, keys Keys, opts Options) (*Anonymizer, error) {
	if reg == nil || keys == nil {
		return nil, errors.New("record: NewAnonymizer needs a registry and a key source")
	}
	if opts.MaxPayload < 0 {
		return nil, fmt.Errorf("record: MaxPayload %d < 0", opts.MaxPayload)
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if len(opts.DeadLetterScope) > MaxDeadLetterScope {
		return nil, fmt.Errorf("record: DeadLetterScope of %d bytes, over the limit of %d", len(opts.DeadLetterScope), MaxDeadLetterScope)
	}
	if opts.Ciphers == nil {
		opts.Ciphers = fieldcrypt.NewCache(100_000, 0)
	}
	return &Anonymizer{reg: reg, keys: keys, ciphers: opts.Ciphers, max: opts.MaxPayload, scope: opts.DeadLetterScope}, nil
}

// Anonymize processes a batch of messages with one key lookup: the keys
// of its users and the payload keys of its rejections (sealRejected). With
// a key source that can (keySets, keyclient.Client), each user's answer
// holds the categories of its own events only: the batch's sets of
// categories are asked for in one lookup, what the client fetches it
// fetches for every category of the batch, and the lookup is sent at once
// (a batch of keyclient.Options.BatchAlone users or more does not wait out
// the client's batch window). It returns one Outcome per message, in
// order. An error means the key service was unavailable for the batch:
// nothing of it may be written, and the caller retries or dead-letters the
// batch as key_unavailable (see KeyUnavailable).
func (a *Anonymizer) Anonymize(ctx context.Context, msgs []Message) ([]Outcome, error) {
	defer a.ciphers.AddCarried(&a.carried) // the batch's, counted once
	out := make([]Outcome, len(msgs))
	if cap(a.events) < len(msgs) {
		a.events = make([]schemas.Event, len(msgs))
		a.schemas = make([]*schemas.Schema, len(msgs))
	}
	events, schs := a.events[:len(msgs)], a.schemas[:len(msgs)]

	var users []string
	seen := make(map[string]int, len(msgs))
	a.batch++
	var cats []string  // every category of the batch
	need := a.need[:0] // per user: the categories its events need (schemaCats.mask)
	for i := range msgs {
		m := &msgs[i]
		o := &out[i]
		o.MessageID, o.PublishTime, o.Hour = m.ID, m.PublishTime.UTC(), Hour(m.PublishTime)
		schs[i] = nil
		s, rej := a.decode(m, &events[i])
		if rej != nil {
			o.Reject = rej
			if s != nil {
				o.EventType, o.Version = s.Type, s.Version
			}
			continue
		}
		schs[i] = s
		o.EventType, o.Version = s.Type, s.Version
		o.EventID = events[i].Values[s.DedupeIndex].Str
		uid := events[i].Values[s.SubjectIndex].Str
		u, ok := seen[uid]
		if !ok {
			u = len(users)
			seen[uid] = u
			users = append(users, uid)
			need = append(need, 0)
		}
		sc := a.catsOf(s)
		if sc.batch != a.batch {
			sc.batch = a.batch
			for _, c := range sc.cats {
				cats = appendUnique(cats, c)
			}
		}
		need[u] |= sc.mask
	}
	a.need = need
	// The rejections so far are decode's: their owners' payload keys are
	// asked in the same lookup (those of deleted users, found below, seal
	// nothing).
	payUsers := a.rejectedOwners(msgs, out)
	keys, payKeys, err := a.lookup(ctx, users, cats, need, payUsers)
	if err != nil {
		return nil, err
	}

	for i := range msgs {
		s := schs[i]
		if s == nil {
			continue
		}
		uk := keys[seen[events[i].Values[s.SubjectIndex].Str]]
		o := &out[i]
		if uk.Err != nil {
			if errors.Is(uk.Err, keyclient.ErrUserDeleted) {
				// The payload is not kept: the user asked to be forgotten.
				o.Reject = &Rejection{Reason: ReasonUserDeleted, Rule: "user keychain was deleted"}
				inClear(o.Reject, &msgs[i])
				continue
			}
			return nil, fmt.Errorf("record: key lookup: %w", uk.Err)
		}
		o.Subject = uk.Subject
		rec, err := a.encrypt(s, &events[i], uk, o)
		if err != nil {
			return nil, err
		}
		o.Record = rec
	}

	if err := a.sealRejected(ctx, msgs, out, payUsers, payKeys); err != nil {
		return nil, err
	}
	return out, nil
}

// lookup fetches the keys of users for the categories of cats (the
// batch's), and returns each user's answer, in users' order, valid until
// the next lookup. With a key source that can (keySets), a user's answer
// holds only the categories it needs (need: schemaCats masks), one set
// per set of them, all asked in one lookup, all of cats and the payload
// category fetched for a user not cached: what is never sealed is not
// copied into the answers.
//
// payUsers' payload keys (sealRejected) are asked in the same lookup, as a
// set of their own, and returned apart (nil: the key source cannot, and
// sealRejected asks for them itself).
func (a *Anonymizer) lookup(ctx context.Context, users, cats []string, need []uint64, payUsers []string) ([]*keyclient.UserKeys, []keyclient.UserKeys, error) {
	if len(users) == 0 && len(payUsers) == 0 {
		return nil, nil, nil
	}
	// One order for a set of categories, whatever order the batch's event
	// types came in.
	all := slices.Sorted(slices.Values(cats))
	byset, ok := a.keys.(keySets)
	if !ok {
		for u := range need {
			need[u] = ^uint64(0)
		}
	}
	// The sets, in the order they first appear, and their users side by
	// side (a counting sort into room the Anonymizer keeps).
	if a.sets == nil {
		a.sets = map[uint64]int{}
	}
	clear(a.sets)
	masks, starts := a.masks[:0], a.starts[:0]
	for _, m := range need {
		g, seen := a.sets[m]
		if !seen {
			g = len(masks)
			a.sets[m] = g
			masks, starts = append(masks, m), append(starts, 0)
		}
		starts[g]++
	}
	starts = append(starts, 0)
	for g, sum := 0, 0; g < len(starts); g++ {
		starts[g], sum = sum, sum+starts[g]
	}
	order := slices.Grow(a.order[:0], len(users))[:len(users)]
	ids := slices.Grow(a.ids[:0], len(users))[:len(users)]
	next := append(a.next[:0], starts...)
	for u, m := range need {
		g := a.sets[m]
		order[next[g]], ids[next[g]] = u, users[u]
		next[g]++
	}
	a.masks, a.starts, a.order, a.ids, a.next = masks, starts, order, ids, next
	for len(a.answers) < len(masks) {
		a.answers = append(a.answers, new(keyclient.Answers))
	}
	out := slices.Grow(a.answered[:0], len(users))[:len(users)]
	a.answered = out
	var answers [][]keyclient.UserKeys
	var pay []keyclient.UserKeys
	if ok {
		// Every set in one lookup: the users the client must fetch go to
		// the service together, at once, for every category of the batch
		// and the payload category. Fetched with each user, a payload key
		// is in the cache when one of the user's messages is rejected:
		// asked only then, a batch with a rejection waited for a fetch of
		// its own (a round trip to a key service across a network) nearly
		// every time. The payload keys of the batch's rejections are a set
		// of their own: their owners are not all the batch's users
		// (DeadLetterUser), and need no other category.
		asks := a.asks[:0]
		also := append(slices.Clip(all), PayloadCategory)
		for g, m := range masks {
			asks = append(asks, keyclient.Set{Answers: a.answers[g], UserIDs: ids[starts[g]:starts[g+1]], Categories: a.catsOfMask(m, all), Also: also})
		}
		if len(payUsers) > 0 {
			if a.payAnswers == nil {
				a.payAnswers = new(keyclient.Answers)
			}
			asks = append(asks, keyclient.Set{Answers: a.payAnswers, UserIDs: payUsers, Categories: []string{PayloadCategory}})
		}
		a.asks = asks
		var err error
		if answers, err = byset.ForEncryptSets(ctx, asks); err != nil {
			return nil, nil, fmt.Errorf("record: key lookup for %d users: %w", len(users)+len(payUsers), err)
		}
		if len(answers) != len(asks) {
			return nil, nil, fmt.Errorf("record: key service answered %d of %d sets of users", len(answers), len(asks))
		}
		if len(payUsers) > 0 {
			answers, pay = answers[:len(masks)], answers[len(masks)]
		}
	} else if len(users) > 0 {
		// One set: every user needs every category.
		keys, err := a.keys.ForEncrypt(ctx, ids, all)
		if err != nil {
			return nil, nil, fmt.Errorf("record: key lookup for %d users: %w", len(users), err)
		}
		answers = [][]keyclient.UserKeys{keys}
	}
	for g, keys := range answers {
		lo, hi := starts[g], starts[g+1]
		if len(keys) != hi-lo {
			return nil, nil, fmt.Errorf("record: key service answered %d of %d users", len(keys), hi-lo)
		}
		for j, u := range order[lo:hi] {
			out[u] = &keys[j]
		}
	}
	return out, pay, nil
}

// catsOfMask returns the categories of all (a batch's, sorted) whose bits
// (Anonymizer.catNames) mask holds, in all's order: all itself for a mask
// of every bit.
func (a *Anonymizer) catsOfMask(mask uint64, all []string) []string {
	if mask == ^uint64(0) {
		return all
	}
	var cats []string
	for _, cat := range all {
		if b := slices.Index(a.catNames, cat); b < 64 && mask&(1<<b) != 0 {
			cats = append(cats, cat)
		}
	}
	return cats
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// decode looks up the schema and validates the payload.
func (a *Anonymizer) decode(m *Message, ev *schemas.Event) (*schemas.Schema, *Rejection) {
	if len(m.Data) > a.max {
		return nil, &Rejection{Reason: schemas.ReasonOversized, Path: "$", Rule: "payload larger than " + strconv.Itoa(a.max) + " bytes"}
	}
	et := m.EventType()
	if et == "" {
		return nil, &Rejection{Reason: schemas.ReasonUnknownEventType, Path: AttrEventType, Rule: "attribute missing"}
	}
	v := m.SchemaVersion()
	s, err := a.reg.Lookup(et, v)
	if err != nil {
		if errors.Is(err, schemas.ErrUnknownEventType) {
			return nil, &Rejection{Reason: schemas.ReasonUnknownEventType, Path: AttrEventType, Rule: "not in the schema registry"}
		}
		return nil, &Rejection{Reason: schemas.ReasonUnknownVersion, Path: AttrSchemaVersion, Rule: "not in the schema registry"}
	}
	if err := s.Decode(m.Data, ev); err != nil {
		var ve *schemas.ValidationError
		if errors.As(err, &ve) {
			return s, &Rejection{Reason: ve.Reason, Path: ve.Path, Rule: ve.Rule}
		}
		return s, &Rejection{Reason: schemas.ReasonMalformedJSON, Path: "$", Rule: "unreadable payload"}
	}
	return s, nil
}

// encrypt encodes the encrypted record of one valid event.
func (a *Anonymizer) encrypt(s *schemas.Schema, ev *schemas.Event, uk *keyclient.UserKeys, o *Outcome) ([]byte, error) {
	enc := s.Encrypted()
	// _key_version is the highest category key version the record uses;
	// each ciphertext also names its own version in its Tink prefix.
	keyVersion := 0
	size := 64 + len(enc.Fields)*24 // ciphertexts added below: one allocation per record
	for _, f := range s.PIIFields() {
		if v := &ev.Values[f.Index]; v.Present && !v.Null {
			if k := findKey(uk, f.PII.Category); k != nil && k.Version > keyVersion {
				keyVersion = k.Version
			}
			size += fieldcrypt.CiphertextSize(plaintextMax(f, v), f.PII.Deterministic)
		}
	}
	buf := make([]byte, 0, size)
	for i := range enc.Fields {
		f := &enc.Fields[i]
		switch {
		case f.Meta == schemas.MetaSubject:
			buf = appendString(buf, uk.Subject)
		case f.Meta == schemas.MetaKeyVersion:
			buf = appendLong(buf, int64(keyVersion))
		case f.Meta == schemas.MetaPublishTime:
			buf = appendLong(buf, o.PublishTime.UnixMilli())
		case f.Meta == schemas.MetaHour:
			buf = appendLong(buf, o.Hour.UnixMilli())
		case f.PII != nil:
			v := &ev.Values[f.Source]
			if v.Null || !v.Present {
				buf = append(buf, 0) // union branch 0: null
				continue
			}
			k := findKey(uk, f.PII.Category)
			if k == nil {
				// Revoked category (opt-out): the value is not kept.
				buf = append(buf, 0)
				continue
			}
			c, err := a.ciphers.CipherCounting(*k, f.PII.Deterministic, &a.carried)
			if err != nil {
				return nil, fmt.Errorf("record: cipher for %s: %w", k, err)
			}
			a.pt = plaintext(a.pt[:0], &s.Fields[f.Source], v)
			a.aad = fieldcrypt.AppendAAD(a.aad[:0], s.Type, f.Name, uk.Subject)
			// The Avro bytes value is sealed in place: its length first.
			n := fieldcrypt.CiphertextSize(len(a.pt), f.PII.Deterministic)
			buf = appendLong(append(buf, 2), int64(n)) // union branch 1 (zigzag 1 = 2): bytes
			start := len(buf)
			if buf, err = c.AppendEncrypt(buf, a.pt, a.aad, f.PII.Deterministic); err != nil {
				return nil, fmt.Errorf("record: %s.%s: %w", s.Type, f.Name, err)
			}
			if len(buf)-start != n {
				return nil, fmt.Errorf("record: %s.%s: ciphertext of %d bytes, want %d", s.Type, f.Name, len(buf)-start, n)
			}
		default:
			buf = appendValue(buf, &s.Fields[f.Source], &ev.Values[f.Source])
		}
	}
	return buf, nil
}

// findKey returns the newest key of category among uk's (nil when none:
// the category is revoked). It points into uk.Keys rather than copying a
// key per field.
func findKey(uk *keyclient.UserKeys, category string) *fieldcrypt.CategoryKey {
	var best *fieldcrypt.CategoryKey
	for i := range uk.Keys {
		if k := &uk.Keys[i]; k.Category == category && (best == nil || k.Version > best.Version) {
			best = k
		}
	}
	return best
}

// plaintextMax bounds the length of plaintext's encoding of v.
func plaintextMax(f *schemas.Field, v *schemas.Value) int {
	switch f.Kind {
	case schemas.KindInt, schemas.KindLong:
		return 20 // "-9223372036854775808"
	default:
		return len(v.Str)
	}
}

// plaintext encodes one PII value as the bytes that are sealed: strings as
// UTF-8, bytes as is, int and long as base-10 ASCII.
func plaintext(dst []byte, f *schemas.Field, v *schemas.Value) []byte {
	switch f.Kind {
	case schemas.KindInt, schemas.KindLong:
		return strconv.AppendInt(dst, v.Int, 10)
	default:
		return append(dst, v.Str...)
	}
}

// appendValue encodes a non-personal value in its Avro type.
func appendValue(b []byte, f *schemas.Field, v *schemas.Value) []byte {
	if f.Nullable {
		if v.Null || !v.Present {
			return append(b, 0)
		}
		b = append(b, 2)
	}
	switch f.Kind {
	case schemas.KindString, schemas.KindBytes:
		return appendString(b, v.Str)
	case schemas.KindInt, schemas.KindLong, schemas.KindTimestampMillis:
		return appendLong(b, v.Int)
	case schemas.KindFloat:
		return appendFloat(b, float32(v.Float))
	case schemas.KindDouble:
		return appendDouble(b, v.Float)
	case schemas.KindBoolean:
		return appendBool(b, v.Bool)
	case schemas.KindEnum:
		for i, sym := range f.Symbols {
			if sym == v.Str {
				return appendLong(b, int64(i))
			}
		}
		return appendLong(b, 0) // unreachable: Decode validated the symbol
	}
	return b
}

// inClear completes what rejection r of message m keeps in clear: its
// message id, publish time and contract attributes (the others are
// counted as dropped until sealRejected seals them).
func inClear(r *Rejection, m *Message) {
	r.MessageID, r.PublishTime = m.ID, m.PublishTime.UTC()
	r.Attributes, r.AttributesDropped = contractAttributes(m.Attributes)
}

// rejectedOwners completes the rejections of out with what they keep in
// clear (inClear) and finds whose payload key seals the rest of each
// (the user the payload names, or the root's dead-letter user of the day
// for one that names none or is not read), and returns those owners,
// once each: a.owner[i] is message i's owner's index in them plus one (0:
// nothing is sealed).
func (a *Anonymizer) rejectedOwners(msgs []Message, out []Outcome) []string {
	a.owner = slices.Grow(a.owner[:0], len(out))[:len(out)]
	clear(a.owner)
	if a.ownerIdx == nil {
		a.ownerIdx = map[string]int{}
	}
	clear(a.ownerIdx)
	var users []string
	for i := range out {
		r := out[i].Reject
		if r == nil {
			continue
		}
		m := &msgs[i]
		inClear(r, m)
		if r.Reason == ReasonUserDeleted {
			continue // the user asked to be forgotten: nothing is kept
		}
		payload := len(m.Data) > 0 && len(m.Data) <= a.max
		if !payload && r.AttributesDropped == 0 {
			continue
		}
		// An oversized payload is not read (not even for its user id); its
		// other attributes go under the root's dead-letter key of the day.
		uid := DeadLetterUser(a.scope, m.PublishTime)
		if payload {
			uid = payloadOwner(m, a.scope)
		}
		u, ok := a.ownerIdx[uid]
		if !ok {
			u = len(users)
			a.ownerIdx[uid] = u
			users = append(users, uid)
		}
		a.owner[i] = u + 1
	}
	return users
}

// sealRejected seals the payload and other attributes of each rejection
// that rejectedOwners gave an owner, under the owner's payload key (keys:
// users' answers, in order; nil when lookup could not ask for them, and
// they are asked for here). A deleted owner or a revoked payload category
// drops them, the rejection being kept.
func (a *Anonymizer) sealRejected(ctx context.Context, msgs []Message, out []Outcome, users []string, keys []keyclient.UserKeys) error {
	if len(users) == 0 {
		return nil
	}
	if keys == nil {
		var err error
		if keys, err = a.keys.ForEncrypt(ctx, users, []string{PayloadCategory}); err != nil {
			return fmt.Errorf("record: payload key lookup: %w", err)
		}
	}
	if len(keys) != len(users) {
		return fmt.Errorf("record: key service answered %d of %d users", len(keys), len(users))
	}
	for i := range out {
		if a.owner[i] == 0 {
			continue
		}
		owner := users[a.owner[i]-1]
		uk := &keys[a.owner[i]-1]
		r := out[i].Reject
		if uk.Err != nil {
			continue // deleted user: payload and other attributes are dropped, the rejection is kept
		}
		k := findKey(uk, PayloadCategory)
		if k == nil {
			continue // "payload" revoked: likewise
		}
		c, err := a.ciphers.Cipher(*k, false)
		if err != nil {
			return fmt.Errorf("record: payload cipher: %w", err)
		}
		m := &msgs[i]
		if len(m.Data) > 0 && len(m.Data) <= a.max {
			aad := fieldcrypt.AAD(deadLetterPayloadAAD, m.ID, uk.Subject)
			ct, err := c.Encrypt(m.Data, aad, false)
			if err != nil {
				return err
			}
			r.PayloadCiphertext, r.PayloadAAD = ct, string(aad)
		}
		if r.AttributesDropped > 0 {
			pt, err := otherAttributesJSON(m.Attributes)
			if err != nil {
				return err
			}
			aad := fieldcrypt.AAD(deadLetterAttributesAAD, m.ID, uk.Subject)
			ct, err := c.Encrypt(pt, aad, false)
			if err != nil {
				return err
			}
			r.AttributesCiphertext, r.AttributesAAD, r.AttributesDropped = ct, string(aad), 0
		}
		r.Subject = uk.Subject
		if out[i].Subject == "" && !isDeadLetterUser(owner) {
			out[i].Subject = uk.Subject
		}
	}
	return nil
}

// The first part of the AAD of what a dead letter seals:
// "<part>.<message id>|<_subject>". They differ before their first ".",
// so no message id makes the AAD of a payload that of some attributes.
const (
	deadLetterPayloadAAD    = "_deadletter"
	deadLetterAttributesAAD = "_deadletter_attributes"
)

// contractAttributes copies the attributes the message contract names
// (AttrEventType, AttrSchemaVersion) and counts the others.
func contractAttributes(attrs map[string]string) (contract map[string]string, others int) {
	for k, v := range attrs {
		if k != AttrEventType && k != AttrSchemaVersion {
			others++
			continue
		}
		if contract == nil {
			contract = make(map[string]string, 2)
		}
		contract[k] = v
	}
	return contract, others
}

// otherAttributesJSON is the sealed plaintext of a message's non-contract
// attributes: a JSON object of strings, keys sorted (invalid UTF-8, which
// Pub/Sub does not allow in attributes, becomes U+FFFD).
func otherAttributesJSON(attrs map[string]string) ([]byte, error) {
	other := make(map[string]string, len(attrs))
	for k, v := range attrs {
		if k != AttrEventType && k != AttrSchemaVersion {
			other[k] = v
		}
	}
	b, err := json.Marshal(other)
	if err != nil {
		// Unreachable for a map of strings; the error names no value.
		return nil, errors.New("record: cannot encode the attributes of a dead letter")
	}
	return b, nil
}

// payloadOwner finds the user a rejected payload belongs to, leniently: a
// top-level string "user_id" member if the payload is a JSON object,
// otherwise the dead-letter keychain of the root (scope) and day.
func payloadOwner(m *Message, scope string) string {
	var probe struct {
		UserID *string `json:"user_id"`
	}
	if json.Unmarshal(m.Data, &probe) == nil && probe.UserID != nil && *probe.UserID != "" && len(*probe.UserID) <= 256 {
		return *probe.UserID
	}
	return DeadLetterUser(scope, m.PublishTime)
}

func isDeadLetterUser(uid string) bool {
	return len(uid) > len(deadLetterUserPrefix) && uid[:len(deadLetterUserPrefix)] == deadLetterUserPrefix
}

// KeyUnavailable builds the outcomes of a batch whose keys could not be had
// within the retry budget: every message is dead-lettered as
// key_unavailable with its contract attributes only; its payload and other
// attributes are dropped (nothing could seal them), the latter counted.
func KeyUnavailable(msgs []Message) []Outcome {
	out := make([]Outcome, len(msgs))
	for i, m := range msgs {
		r := &Rejection{Reason: ReasonKeyUnavailable, Rule: "key service unavailable", MessageID: m.ID, PublishTime: m.PublishTime.UTC()}
		r.Attributes, r.AttributesDropped = contractAttributes(m.Attributes)
		out[i] = Outcome{MessageID: m.ID, EventType: m.EventType(), Version: m.SchemaVersion(), PublishTime: m.PublishTime.UTC(), Hour: Hour(m.PublishTime), Reject: r}
	}
	return out
}
