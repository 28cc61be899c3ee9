// Package retention finds and deletes the data of an output root that is
// past its event type's retention (schemas.Retention, declared in each
// .avsc), and shreds the keys of the dead letters it deletes. An hour's age
// counts from its end.
//
// # Behavior
//
//   - Raw and late hours go after their type's Raw retention, dataset hours
//     after Published. A type without a declared retention is never touched
//     (Plan.Undeclared lists it).
//   - Dead letters carry no type: they are kept for the longest Raw
//     retention among the types that declare one, or DefaultDeadLetterDays
//     when none does; Options.DeadLetterDays overrides both. A type without
//     a declared retention does not keep dead letters forever.
//   - A raw or late hour whose dataset is not published is kept, and
//     reported (Plan.Held), unless IncludeUnpublished: deleting it would
//     lose events that were never published.
//   - A dataset hour loses its _SUCCESS first, so readers (which ignore an
//     hour without _SUCCESS) stop seeing it at once; a crash midway leaves
//     an unpublished remainder that the next run deletes.
//   - Dead letters whose user is unknown are sealed under one keychain per
//     root and UTC day (record.DeadLetterUser(root id, day); the root id is
//     package rootid's). When a plan deletes every dead letter of a day
//     (all its hours, every reason: Plan.ShredDays), Apply deletes that
//     keychain through a Shredder (the key service's admin API) just
//     before the day's first dead-letter file: copies the bucket keeps
//     (object versioning, soft delete) become unreadable too. A keychain
//     that never existed or is already deleted is not an error.
//
// # Failure modes
//
// Apply refuses (ErrNoShredder) a plan that deletes dead letters without a
// Shredder, before deleting anything. A failed shred keeps that day's dead
// letters for the next run to retry (they stay expired) and Apply goes on
// with the rest, returning the error at the end. A root without a root id
// was never written with a dead-letter scope: there is no keychain of its
// to shred (Applied.NoRootID).
package retention

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/rootid"
	"github.com/lockstream/lockstream/schemas"
)

// DefaultDeadLetterDays is how long dead letters are kept when no type
// declares a retention (and Options.DeadLetterDays is 0).
const DefaultDeadLetterDays = 30

const day = 24 * time.Hour

// Shredder deletes a keychain; the key service's admin API (keyclient.Admin,
// or the embedded service) does.
type Shredder interface {
	DeleteUser(ctx context.Context, userID string) error
}

// ErrNoShredder: a plan that deletes dead letters was applied without a
// Shredder (a configuration error: pass the key service).
var ErrNoShredder = errors.New("retention: deleting dead letters needs the key service, to shred their keys")

// Item is one hour of one area.
type Item struct {
	Area    string      // layout.RawArea, LateArea, DatasetsArea or DeadLetterArea
	Hour    layout.Hour // Type and Version empty for dead letters
	Reason  string      // dead-letter reason (dead letters only)
	Objects []string
	Expired time.Time // when it expired (end of hour + retention)
}

func (it Item) String() string {
	if it.Area == layout.DeadLetterArea {
		return fmt.Sprintf("%s/%s %s", it.Area, it.Reason, layout.FormatHour(it.Hour.Hour))
	}
	return fmt.Sprintf("%s %s", it.Area, it.Hour)
}

// Plan is what a run deletes and what it keeps although expired.
type Plan struct {
	Now    time.Time
	Delete []Item
	// Held are expired raw or late hours kept because their dataset is
	// not published.
	Held []Item
	// Undeclared lists types with data but no retention (kept forever).
	Undeclared []string
	// DeadLetterRetention is how long dead letters are kept.
	DeadLetterRetention time.Duration
	// ShredDays are the UTC days (at midnight, ascending) of which Delete
	// removes every dead letter: Apply shreds their dead-letter keychain.
	ShredDays []time.Time
}

// Options configure a plan.
type Options struct {
	Now                time.Time // default time.Now()
	IncludeUnpublished bool      // delete expired raw/late hours even if not published
	Registry           *schemas.Registry
	// DeadLetterDays > 0 keeps dead letters that many days, instead of the
	// longest declared Raw retention (or DefaultDeadLetterDays).
	DeadLetterDays int
}

// PlanRoot lists the expired hours of the root b.
func PlanRoot(ctx context.Context, b blob.Bucket, o Options) (*Plan, error) {
	if o.DeadLetterDays < 0 {
		return nil, fmt.Errorf("retention: DeadLetterDays %d < 0", o.DeadLetterDays)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	reg := o.Registry
	if reg == nil {
		var err error
		if reg, err = schemas.Embedded(); err != nil {
			return nil, err
		}
	}
	p := &Plan{Now: o.Now.UTC()}
	undeclared := map[string]bool{}
	published := map[layout.Hour]bool{}
	type key struct {
		area, reason string
		h            layout.Hour
	}
	groups := map[key][]string{}
	for _, area := range []string{layout.RawArea, layout.LateArea, layout.DatasetsArea, layout.DeadLetterArea} {
		names, err := b.List(ctx, area+"/")
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if area == layout.DeadLetterArea {
				reason, hour, ok := parseDeadLetter(n)
				if ok {
					groups[key{area, reason, layout.Hour{Hour: hour}}] = append(groups[key{area, reason, layout.Hour{Hour: hour}}], n)
				}
				continue
			}
			a, h, file, ok := layout.ParseDir(n)
			if !ok || a != area {
				continue
			}
			if a == layout.DatasetsArea && file == layout.Success {
				published[h] = true
			}
			groups[key{area, "", h}] = append(groups[key{area, "", h}], n)
		}
	}
	p.DeadLetterRetention = DeadLetterRetention(reg, o.DeadLetterDays)
	deadGroups := map[time.Time]int{} // UTC day -> dead-letter hours (of any reason)
	for k := range groups {
		if k.area == layout.DeadLetterArea {
			deadGroups[k.h.Hour.Truncate(day)]++
		}
	}
	deadDeleted := map[time.Time]int{}
	for k, objs := range groups {
		var keep time.Duration
		switch k.area {
		case layout.DeadLetterArea:
			keep = p.DeadLetterRetention
		case layout.DatasetsArea:
			keep = reg.Retention(k.h.Type).Published
		default:
			keep = reg.Retention(k.h.Type).Raw
		}
		if k.area != layout.DeadLetterArea && keep == 0 {
			undeclared[k.h.Type] = true
			continue
		}
		if keep <= 0 {
			continue
		}
		expired := k.h.Hour.Add(time.Hour + keep)
		if expired.After(p.Now) {
			continue
		}
		sort.Strings(objs)
		it := Item{Area: k.area, Hour: k.h, Reason: k.reason, Objects: objs, Expired: expired}
		if k.area == layout.DatasetsArea {
			it.Objects = successFirst(objs)
		}
		if (k.area == layout.RawArea || k.area == layout.LateArea) && !published[k.h] && !o.IncludeUnpublished {
			p.Held = append(p.Held, it)
			continue
		}
		p.Delete = append(p.Delete, it)
		if k.area == layout.DeadLetterArea {
			deadDeleted[k.h.Hour.Truncate(day)]++
		}
	}
	for d, n := range deadDeleted {
		if n == deadGroups[d] {
			p.ShredDays = append(p.ShredDays, d)
		}
	}
	sort.Slice(p.ShredDays, func(i, j int) bool { return p.ShredDays[i].Before(p.ShredDays[j]) })
	for t := range undeclared {
		p.Undeclared = append(p.Undeclared, t)
	}
	sort.Strings(p.Undeclared)
	order := func(items []Item) {
		sort.Slice(items, func(i, j int) bool { return items[i].String() < items[j].String() })
	}
	order(p.Delete)
	order(p.Held)
	return p, nil
}

// DeadLetterRetention is how long dead letters are kept: days when > 0,
// else the longest Raw retention among the types of reg that declare one,
// else DefaultDeadLetterDays.
func DeadLetterRetention(reg *schemas.Registry, days int) time.Duration {
	if days > 0 {
		return time.Duration(days) * day
	}
	var keep time.Duration
	for _, t := range reg.Types() {
		if r := reg.Retention(t); r.Declared() {
			keep = max(keep, r.Raw)
		}
	}
	if keep == 0 {
		keep = DefaultDeadLetterDays * day
	}
	return keep
}

// successFirst puts an hour's _SUCCESS first.
func successFirst(objs []string) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		if strings.HasSuffix(o, "/"+layout.Success) {
			out = append(out, o)
		}
	}
	for _, o := range objs {
		if !strings.HasSuffix(o, "/"+layout.Success) {
			out = append(out, o)
		}
	}
	return out
}

// parseDeadLetter reads deadletter/<reason>/<YYYY-MM-DD>/<HH>/<file>.
func parseDeadLetter(name string) (reason string, hour time.Time, ok bool) {
	p := strings.Split(name, "/")
	if len(p) < 5 || p[0] != layout.DeadLetterArea {
		return "", time.Time{}, false
	}
	t, err := time.Parse("2006-01-02/15", p[2]+"/"+p[3])
	return p[1], t, err == nil
}

// Applied is what Apply did.
type Applied struct {
	Hours    int         // hours (items) deleted
	Shredded []time.Time // days whose dead-letter keychain was deleted
	// NoRootID: the root has no root id, so no dead-letter keychain of its
	// can exist; nothing was shredded.
	NoRootID bool
}

// Apply deletes what p plans, in order; progress is called after each hour.
// Before the first dead-letter file of a day in p.ShredDays it deletes the
// keychain record.DeadLetterUser(root id, day) through s, which may be nil
// only when p deletes no dead letter.
func Apply(ctx context.Context, b blob.Bucket, p *Plan, s Shredder, progress func(done, total int, it Item)) (Applied, error) {
	var a Applied
	var scope string
	shred := map[time.Time]bool{}
	for _, it := range p.Delete {
		if it.Area == layout.DeadLetterArea && s == nil {
			return a, ErrNoShredder
		}
	}
	if len(p.ShredDays) > 0 {
		id, err := rootid.Read(ctx, b)
		switch {
		case errors.Is(err, blob.ErrNotExist):
			a.NoRootID = true
		case err != nil:
			return a, fmt.Errorf("retention: %w", err)
		default:
			scope = id
			for _, d := range p.ShredDays {
				shred[d] = true
			}
		}
	}
	failed := map[time.Time]bool{}
	var errs []error
	for _, it := range p.Delete {
		if it.Area == layout.DeadLetterArea {
			d := it.Hour.Hour.Truncate(day)
			if failed[d] {
				continue
			}
			if shred[d] {
				if err := s.DeleteUser(ctx, record.DeadLetterUser(scope, d)); err != nil &&
					!errors.Is(err, keyclient.ErrUnknownUser) && !errors.Is(err, keyclient.ErrUserDeleted) {
					// Keep the day's dead letters: the next run retries.
					failed[d] = true
					errs = append(errs, fmt.Errorf("retention: shred the dead-letter key of %s (its dead letters are kept): %w", d.Format(time.DateOnly), err))
					continue
				}
				delete(shred, d)
				a.Shredded = append(a.Shredded, d)
			}
		}
		for _, o := range it.Objects {
			if err := b.Delete(ctx, o); err != nil {
				return a, errors.Join(append(errs, fmt.Errorf("retention: delete %s: %w", o, err))...)
			}
		}
		a.Hours++
		if progress != nil {
			progress(a.Hours, len(p.Delete), it)
		}
	}
	sort.Slice(a.Shredded, func(i, j int) bool { return a.Shredded[i].Before(a.Shredded[j]) })
	return a, errors.Join(errs...)
}
