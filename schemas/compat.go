package schemas

import (
	"errors"
	"fmt"
	"slices"
)

// ErrIncompatible is wrapped by every CheckCompatible failure.
var ErrIncompatible = errors.New("schemas: incompatible")

// CheckCompatible reports whether data written with writer can be read with
// reader under Avro schema resolution, plus lockstream's PII rules. All
// problems are returned, joined; each wraps ErrIncompatible.
//
// Avro rules: record names must match; a reader field missing from the writer
// needs a default; writer fields missing from the reader are ignored; types
// resolve if equal or promotable (int→long→float→double, int→float/double,
// string↔bytes); enums need every writer symbol in the reader; a nullable
// reader accepts a non-nullable writer, not the reverse. long and
// timestamp-millis do not mix (the meaning changes).
//
// PII rules: a field's pii annotation may not be dropped, added, or change
// category, determinism or subject role (old ciphertexts or plaintexts would
// be misread), and the subject field must keep its name.
func CheckCompatible(reader, writer *Schema) error {
	var errs []error
	add := func(field, format string, args ...any) {
		where := fmt.Sprintf("%s reading %s", reader, writer)
		if field != "" {
			where += ": field " + field
		}
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrIncompatible, where, fmt.Sprintf(format, args...)))
	}
	if reader.Type != writer.Type {
		add("", "record names differ (%s vs %s)", reader.Type, writer.Type)
		return errors.Join(errs...)
	}
	if rs, ws := reader.Subject().Name, writer.Subject().Name; rs != ws {
		add("", "subject field changed from %q to %q", ws, rs)
	}
	for i := range reader.Fields {
		rf := &reader.Fields[i]
		wf, ok := writer.Field(rf.Name)
		if !ok {
			if !rf.HasDefault {
				add(rf.Name, "added without a default (data written without it cannot be read)")
			}
			continue
		}
		if msg := resolveType(rf, wf); msg != "" {
			add(rf.Name, "%s", msg)
		}
		if msg := comparePII(rf.PII, wf.PII); msg != "" {
			add(rf.Name, "%s", msg)
		}
	}
	return errors.Join(errs...)
}

func resolveType(r, w *Field) string {
	if w.Nullable && !r.Nullable {
		return fmt.Sprintf("writer %s may hold null, reader %s cannot", typeName(w), typeName(r))
	}
	if !promotable(w.Kind, r.Kind) {
		return fmt.Sprintf("type changed from %s to %s (not an Avro promotion)", typeName(w), typeName(r))
	}
	if r.Kind == KindEnum {
		if baseNameDot(r.EnumName) != baseNameDot(w.EnumName) { // Avro compares unqualified names
			return fmt.Sprintf("enum name changed from %s to %s", w.EnumName, r.EnumName)
		}
		for _, sym := range w.Symbols {
			if !slices.Contains(r.Symbols, sym) {
				return fmt.Sprintf("enum symbol %q written but unknown to the reader", sym)
			}
		}
	}
	return ""
}

func baseNameDot(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[i+1:]
		}
	}
	return s
}

func promotable(w, r Kind) bool {
	if w == r {
		return true
	}
	switch w {
	case KindInt:
		return r == KindLong || r == KindFloat || r == KindDouble
	case KindLong:
		return r == KindFloat || r == KindDouble
	case KindFloat:
		return r == KindDouble
	case KindString:
		return r == KindBytes
	case KindBytes:
		return r == KindString
	}
	return false
}

func comparePII(r, w *PII) string {
	switch {
	case r == nil && w == nil:
		return ""
	case r == nil:
		return fmt.Sprintf("pii annotation (category %q) dropped: existing data holds ciphertexts", w.Category)
	case w == nil:
		return fmt.Sprintf("pii annotation (category %q) added to an existing field: existing data holds it in the clear; add a new field instead", r.Category)
	case r.Category != w.Category:
		return fmt.Sprintf("pii category changed from %q to %q: existing ciphertexts are under the other category's key", w.Category, r.Category)
	case r.Deterministic != w.Deterministic:
		return "pii deterministic flag changed: existing ciphertexts use the other primitive"
	case r.Subject != w.Subject:
		return "pii subject flag changed"
	}
	return ""
}

// CheckAll checks every pair of versions of each event type both ways (Avro
// FULL compatibility) and returns all problems, joined.
func (r *Registry) CheckAll() error {
	var errs []error
	for _, t := range r.types {
		vs := r.Versions(t)
		for _, a := range vs {
			for _, b := range vs {
				if a == b {
					continue
				}
				if err := CheckCompatible(r.byType[t][a], r.byType[t][b]); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}
