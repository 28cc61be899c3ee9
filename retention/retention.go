// Package retention finds and deletes the data of an output root that is
// past its event type's retention (schemas.Retention, declared in each
// .avsc): raw and late hours after Raw, dataset hours after Published,
// dead-letter hours after the longest Raw of all types. An hour's age counts
// from its end.
//
// Rules:
//   - a type without a declared retention is never touched (and neither is
//     the dead-letter area while such a type exists);
//   - a raw or late hour whose dataset is not published is kept, and
//     reported, unless IncludeUnpublished: deleting it would lose events
//     that were never published;
//   - a dataset hour loses its _SUCCESS first, so readers (which ignore an
//     hour without _SUCCESS) stop seeing it at once; a crash midway leaves
//     an unpublished remainder that the next run deletes.
package retention

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/schemas"
)

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
}

// Options configure a plan.
type Options struct {
	Now                time.Time // default time.Now()
	IncludeUnpublished bool      // delete expired raw/late hours even if not published
	Registry           *schemas.Registry
}

// PlanRoot lists the expired hours of the root b.
func PlanRoot(ctx context.Context, b blob.Bucket, o Options) (*Plan, error) {
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
	// Dead letters carry no type in their path: they go when every type's
	// raw data of that hour would.
	var deadRetention time.Duration
	for _, t := range reg.Types() {
		r := reg.Retention(t)
		if !r.Declared() {
			deadRetention = -1
			break
		}
		deadRetention = max(deadRetention, r.Raw)
	}
	for k, objs := range groups {
		var keep time.Duration
		switch k.area {
		case layout.DeadLetterArea:
			keep = deadRetention
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
	}
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

// Apply deletes what p plans, in order; progress is called after each hour.
func Apply(ctx context.Context, b blob.Bucket, p *Plan, progress func(done, total int, it Item)) error {
	for i, it := range p.Delete {
		for _, o := range it.Objects {
			if err := b.Delete(ctx, o); err != nil {
				return fmt.Errorf("retention: delete %s: %w", o, err)
			}
		}
		if progress != nil {
			progress(i+1, len(p.Delete), it)
		}
	}
	return nil
}
