package bq

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"cloud.google.com/go/bigquery"

	"github.com/lockstream/lockstream/schemas"
)

// ViewName is the decrypted view of one event type, over all its versions:
// "<type>_decrypted".
func ViewName(eventType string) string { return eventType + "_decrypted" }

// TableRef is a fully qualified table: project.dataset.table.
type TableRef struct{ Project, Dataset, Table string }

// ParseTableRef parses "table", "dataset.table" or "project.dataset.table"
// (also "project:dataset.table"); missing parts come from project and
// dataset.
func ParseTableRef(s, project, dataset string) (TableRef, error) {
	s = strings.Replace(s, ":", ".", 1)
	p := strings.Split(s, ".")
	r := TableRef{Project: project, Dataset: dataset}
	switch len(p) {
	case 1:
		r.Table = p[0]
	case 2:
		r.Dataset, r.Table = p[0], p[1]
	case 3:
		r.Project, r.Dataset, r.Table = p[0], p[1], p[2]
	default:
		return r, fmt.Errorf("bq: table %q: want [[project.]dataset.]table", s)
	}
	return r, checkIDs(r.Project, r.Dataset, r.Table)
}

func (r TableRef) quoted() string { return quoteTable(r.Project, r.Dataset, r.Table) }

// SQL names of the functions a view uses; tests parse them back.
const (
	fnAEAD          = "SAFE.AEAD.DECRYPT_BYTES"
	fnDeterministic = "SAFE.DETERMINISTIC_DECRYPT_BYTES"
)

// viewColumn is one select item of a version's SELECT.
type viewColumn struct {
	name    string
	expr    string // "" for a pass-through column
	sqlType string // the column's SQL type (for a typed NULL in other versions)
}

func (c viewColumn) item() string {
	if c.expr == "" {
		return "t.`" + c.name + "`"
	}
	return c.expr + " AS `" + c.name + "`"
}

// versionSelect is the SELECT of one version: its columns and joins.
type versionSelect struct {
	cols  []viewColumn
	joins []string
}

// sqlTypes maps the BigQuery table types of the encrypted schema to SQL.
var sqlTypes = map[bigquery.FieldType]string{
	bigquery.StringFieldType: "STRING", bigquery.BytesFieldType: "BYTES", bigquery.IntegerFieldType: "INT64",
	bigquery.FloatFieldType: "FLOAT64", bigquery.BooleanFieldType: "BOOL", bigquery.TimestampFieldType: "TIMESTAMP",
}

func selectOf(s *schemas.Schema, keys TableRef) (*versionSelect, error) {
	enc := s.Encrypted()
	tableSchema, err := EncryptedTableSchema(s)
	if err != nil {
		return nil, err
	}
	colType := map[string]string{}
	for _, f := range tableSchema {
		colType[f.Name] = sqlTypes[f.Type]
	}
	type join struct {
		category string
		det      bool
	}
	joins := map[join]string{}
	vs := &versionSelect{}
	for _, f := range enc.Fields {
		if !ident.MatchString(f.Name) {
			return nil, fmt.Errorf("bq: %s: field name %q cannot be used in SQL", s, f.Name)
		}
		col := "t.`" + f.Name + "`"
		if f.PII == nil {
			if colType[f.Name] == "" {
				return nil, fmt.Errorf("bq: %s: column %s has no SQL type", s, f.Name)
			}
			vs.cols = append(vs.cols, viewColumn{name: f.Name, sqlType: colType[f.Name]})
			continue
		}
		if !ident.MatchString(f.PII.Category) {
			return nil, fmt.Errorf("bq: %s: category %q cannot be used in SQL", s, f.PII.Category)
		}
		j := join{f.PII.Category, f.PII.Deterministic}
		alias, ok := joins[j]
		if !ok {
			alias = "k_" + j.category
			if j.det {
				alias += "_det"
			}
			joins[j] = alias
		}
		fn := fnAEAD
		if f.PII.Deterministic {
			fn = fnDeterministic
		}
		aadPrefix := s.Type + "." + f.Name + "|" // fieldcrypt.AAD: "<type>.<field>|<_subject>"
		expr := fmt.Sprintf("%s(%s.keyset, %s, CONCAT(%s, t.`%s`))", fn, alias, col, sqlString(aadPrefix), schemas.MetaSubject)
		typ := "BYTES"
		switch src := s.Fields[f.Source]; src.Kind {
		case schemas.KindString:
			expr, typ = "SAFE_CONVERT_BYTES_TO_STRING("+expr+")", "STRING"
		case schemas.KindInt, schemas.KindLong:
			expr, typ = "SAFE_CAST(SAFE_CONVERT_BYTES_TO_STRING("+expr+") AS INT64)", "INT64"
		case schemas.KindBytes:
		default:
			return nil, fmt.Errorf("bq: %s: PII field %s of kind %s has no SQL conversion", s, f.Name, src.Kind)
		}
		vs.cols = append(vs.cols, viewColumn{name: f.Name, expr: expr, sqlType: typ})
	}
	ordered := make([]join, 0, len(joins))
	for j := range joins {
		ordered = append(ordered, j)
	}
	sort.Slice(ordered, func(a, c int) bool { return joins[ordered[a]] < joins[ordered[c]] })
	for _, j := range ordered {
		a := joins[j]
		vs.joins = append(vs.joins, fmt.Sprintf("LEFT JOIN %s AS %s ON %s.`%s` = t.`%s` AND %s.category = %s AND %s.deterministic = %s",
			keys.quoted(), a, a, schemas.MetaSubject, schemas.MetaSubject, a, sqlString(j.category), a, strings.ToUpper(fmt.Sprint(j.det))))
	}
	return vs, nil
}

// ViewColumnVersion is the column of a type's view that says which schema
// version a row was written with.
const ViewColumnVersion = "_schema_version"

// ViewSQL returns the query of the decrypted view of one event type: one
// SELECT per version (src gives each version's table), UNION ALL, over the
// union of the versions' columns — a column a version lacks is a typed NULL
// there — plus _schema_version. It is generated from the encrypted schemas
// only:
//
//   - every non-PII column and the metadata columns pass through;
//   - a PII column becomes
//     SAFE.AEAD.DECRYPT_BYTES(k.keyset, t.`f`, CONCAT('<Type>.<f>|', t.`_subject`))
//     (SAFE.DETERMINISTIC_DECRYPT_BYTES for deterministic fields), where k
//     is the keys table LEFT JOINed on (_subject, category, deterministic);
//     converted back with SAFE_CONVERT_BYTES_TO_STRING for strings and
//     SAFE_CAST(… AS INT64) of that for int/long (fieldcrypt encodes them in
//     base-10 ASCII), bytes as is;
//   - no keys row (shredded user, revoked category), a NULL ciphertext or a
//     ciphertext that does not open gives NULL, never an error.
//
// One select item and one join per line, "UNION ALL" on a line of its own:
// the tests read the SQL back.
func ViewSQL(reg *schemas.Registry, eventType string, src func(version int) TableRef, keys TableRef) (string, error) {
	if err := checkIDs(keys.Project, keys.Dataset, keys.Table); err != nil {
		return "", err
	}
	versions := reg.Versions(eventType)
	if len(versions) == 0 {
		return "", fmt.Errorf("bq: no schema of event type %q", eventType)
	}
	var (
		schemasByV = map[int]*schemas.Schema{}
		selects    = map[int]*versionSelect{}
		order      []string
		typeOf     = map[string]string{}
	)
	// Column order: the latest version's, then columns only older ones have.
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		s, err := reg.Lookup(eventType, v)
		if err != nil {
			return "", err
		}
		vs, err := selectOf(s, keys)
		if err != nil {
			return "", err
		}
		schemasByV[v], selects[v] = s, vs
		for _, c := range vs.cols {
			if prev, ok := typeOf[c.name]; !ok {
				order = append(order, c.name)
				typeOf[c.name] = c.sqlType
			} else if prev != c.sqlType {
				return "", fmt.Errorf("bq: %s: column %s is %s in one version and %s in another", eventType, c.name, prev, c.sqlType)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- Decrypted view of %s, versions %v, generated by lockstream from the encrypted schemas. Do not edit: re-run `lockstream bq views`.\n", eventType, versions)
	for k, v := range versions {
		t := src(v)
		if err := checkIDs(t.Project, t.Dataset, t.Table); err != nil {
			return "", err
		}
		if k > 0 {
			b.WriteString("UNION ALL\n")
		}
		fmt.Fprintf(&b, "-- %s (encrypted schema fingerprint %s)\n", schemasByV[v], schemasByV[v].Encrypted().Fingerprint)
		byName := map[string]viewColumn{}
		for _, c := range selects[v].cols {
			byName[c.name] = c
		}
		b.WriteString("SELECT\n")
		for _, name := range order {
			if c, ok := byName[name]; ok {
				b.WriteString("  " + c.item() + ",\n")
			} else {
				fmt.Fprintf(&b, "  CAST(NULL AS %s) AS `%s`,\n", typeOf[name], name)
			}
		}
		fmt.Fprintf(&b, "  %d AS `%s`\n", v, ViewColumnVersion)
		fmt.Fprintf(&b, "FROM %s AS t\n", t.quoted())
		for _, j := range selects[v].joins {
			b.WriteString(j + "\n")
		}
	}
	return b.String(), nil
}

// Views creates or updates the decrypted views.
type Views struct {
	Client *bigquery.Client
	// Dataset holds the event tables (<Type>_v<N>); ViewDataset the views
	// (default Dataset).
	Dataset, ViewDataset string
	Keys                 TableRef
	Registry             *schemas.Registry // nil: schemas.Embedded()
}

// Apply creates (tables.insert) or updates (tables.patch) one view per
// registered event type, over all its versions; it returns the view names.
func (v *Views) Apply(ctx context.Context) ([]string, error) {
	if v.Client == nil {
		return nil, errors.New("bq: Views.Client is nil")
	}
	reg := v.Registry
	if reg == nil {
		var err error
		if reg, err = schemas.Embedded(); err != nil {
			return nil, err
		}
	}
	vds := v.ViewDataset
	if vds == "" {
		vds = v.Dataset
	}
	project := v.Client.Project()
	var names []string
	for _, typ := range reg.Types() {
		q, err := ViewSQL(reg, typ, func(version int) TableRef {
			return TableRef{Project: project, Dataset: v.Dataset, Table: TableName(typ, version)}
		}, v.Keys)
		if err != nil {
			return names, err
		}
		name := ViewName(typ)
		if err := checkIDs(project, vds, name); err != nil {
			return names, err
		}
		desc := fmt.Sprintf("Decrypted %s, versions %v (lockstream). NULL where the user was shredded, the category revoked, the value was null, or the row's version lacks the column.", typ, reg.Versions(typ))
		t := v.Client.Dataset(vds).Table(name)
		md, err := t.Metadata(ctx)
		switch {
		case isStatus(err, http.StatusNotFound):
			err = t.Create(ctx, &bigquery.TableMetadata{ViewQuery: q, Description: desc, Labels: map[string]string{"lockstream": "view"}})
		case err == nil && md.Type != bigquery.ViewTable:
			err = fmt.Errorf("%w: %s.%s exists and is not a view", ErrTable, vds, name)
		case err == nil:
			_, err = t.Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: q, Description: desc}, md.ETag)
		}
		if err != nil {
			return names, fmt.Errorf("bq: view %s.%s: %w", vds, name, err)
		}
		names = append(names, vds+"."+name)
	}
	return names, nil
}
