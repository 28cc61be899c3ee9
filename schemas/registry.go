package schemas

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"sync"
)

//go:embed avro/*.avsc
var embedded embed.FS

// Lookup errors. Both are permanent: the message names a type or version this
// binary does not know.
var (
	ErrUnknownEventType = errors.New("schemas: unknown event type")
	ErrUnknownVersion   = errors.New("schemas: unknown schema version")
)

// Registry holds every loaded schema, by event type and version. It is
// immutable after Load and safe for concurrent use.
type Registry struct {
	byType map[string]map[int]*Schema
	types  []string
}

var (
	embeddedOnce sync.Once
	embeddedReg  *Registry
	embeddedErr  error
)

// Embedded returns the registry of the .avsc files compiled into the binary
// (schemas/avro). It is loaded once and cached.
func Embedded() (*Registry, error) {
	embeddedOnce.Do(func() {
		sub, err := fs.Sub(embedded, "avro")
		if err != nil {
			embeddedErr = err
			return
		}
		embeddedReg, embeddedErr = Load(sub)
	})
	return embeddedReg, embeddedErr
}

// Load reads every *.avsc file in fsys (recursively) and checks each one. The
// first broken file fails the whole load with a *LoadError.
func Load(fsys fs.FS) (*Registry, error) {
	r := &Registry{byType: map[string]map[int]*Schema{}}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(p) != ".avsc" {
			return nil
		}
		src, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		s, err := parseSchema(p, src)
		if err != nil {
			return err
		}
		vs := r.byType[s.Type]
		if vs == nil {
			vs = map[int]*Schema{}
			r.byType[s.Type] = vs
			r.types = append(r.types, s.Type)
		}
		if prev, dup := vs[s.Version]; dup {
			return &LoadError{File: p, Rule: fmt.Sprintf("%s is also defined in %s", s, prev.file)}
		}
		vs[s.Version] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(r.types)
	for _, t := range r.types {
		var first *Schema
		for _, v := range r.Versions(t) {
			s := r.byType[t][v]
			if first == nil {
				first = s
			} else if s.Retention != first.Retention {
				return nil, &LoadError{File: s.file, Rule: fmt.Sprintf(`"retention" differs from %s's: every version of a type keeps its data as long`, first.file)}
			}
		}
	}
	return r, nil
}

// Retention returns the retention of an event type (zero: not declared,
// keep forever).
func (r *Registry) Retention(eventType string) Retention {
	for _, s := range r.byType[eventType] {
		return s.Retention
	}
	return Retention{}
}

// Lookup returns one version of one event type. Errors wrap ErrUnknownEventType
// or ErrUnknownVersion.
func (r *Registry) Lookup(eventType string, version int) (*Schema, error) {
	vs, ok := r.byType[eventType]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownEventType, safeName(eventType))
	}
	s, ok := vs[version]
	if !ok {
		return nil, fmt.Errorf("%w: %s v%d (known: %v)", ErrUnknownVersion, eventType, version, r.Versions(eventType))
	}
	return s, nil
}

// Resolve is Lookup for message attributes (event_type, schema_version as
// text). Its errors are *ValidationError with reason unknown_event_type or
// unknown_version, and still match ErrUnknownEventType / ErrUnknownVersion
// with errors.Is.
func (r *Registry) Resolve(eventType, version string) (*Schema, error) {
	if _, ok := r.byType[eventType]; !ok {
		return nil, &ValidationError{Reason: ReasonUnknownEventType, Path: "attributes.event_type",
			Rule: "event type " + safeName(eventType) + " is not registered", cause: ErrUnknownEventType}
	}
	v, err := strconv.Atoi(version)
	if err != nil || v < 1 || strconv.Itoa(v) != version {
		return nil, &ValidationError{Reason: ReasonUnknownVersion, Path: "attributes.schema_version",
			Rule: "schema_version must be a positive decimal integer", cause: ErrUnknownVersion}
	}
	s, err := r.Lookup(eventType, v)
	if err != nil {
		return nil, &ValidationError{Reason: ReasonUnknownVersion, Path: "attributes.schema_version",
			Rule: fmt.Sprintf("%s has no version %d", eventType, v), cause: ErrUnknownVersion}
	}
	return s, nil
}

// Types returns the registered event types, sorted.
func (r *Registry) Types() []string { return slices.Clone(r.types) }

// Versions returns the registered versions of eventType, ascending (nil if unknown).
func (r *Registry) Versions(eventType string) []int {
	vs := r.byType[eventType]
	if vs == nil {
		return nil
	}
	out := make([]int, 0, len(vs))
	for v := range vs {
		out = append(out, v)
	}
	sort.Ints(out)
	return out
}

// Latest returns the highest version of eventType.
func (r *Registry) Latest(eventType string) (*Schema, error) {
	vs := r.Versions(eventType)
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownEventType, safeName(eventType))
	}
	return r.byType[eventType][vs[len(vs)-1]], nil
}

// All returns every schema, by type then version.
func (r *Registry) All() []*Schema {
	var out []*Schema
	for _, t := range r.types {
		for _, v := range r.Versions(t) {
			out = append(out, r.byType[t][v])
		}
	}
	return out
}

// safeName quotes an externally supplied type name only if it looks like an
// Avro name; anything else could be payload-derived and is not echoed.
func safeName(s string) string {
	if len(s) <= 64 && validName(s) {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("(not a valid name, %d bytes)", len(s))
}

// DeterministicCategories returns the categories of the deterministic
// (AES-SIV) fields of every schema, sorted, empty but not nil when there
// are none: the keys whose AES-SIV key a key client derives
// (keyclient.Options.Deterministic).
func (r *Registry) DeterministicCategories() []string {
	out := []string{}
	for _, s := range r.All() {
		for _, f := range s.PIIFields() {
			if f.PII.Deterministic && !slices.Contains(out, f.PII.Category) {
				out = append(out, f.PII.Category)
			}
		}
	}
	slices.Sort(out)
	return out
}
