package bq

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"cloud.google.com/go/bigquery"

	"github.com/lockstream/lockstream/schemas"
)

// maxDescription is BigQuery's limit on a column description.
const maxDescription = 1024

// TableName is the BigQuery table of one event type and schema version:
// "<type>_v<version>", e.g. PlaybackEvent_v1.
func TableName(eventType string, version int) string {
	return fmt.Sprintf("%s_v%d", eventType, version)
}

// TableSchema maps an Avro record schema (the encrypted schema of an event
// type, schemas.EncryptedSchema.JSON) to the BigQuery schema a load job with
// UseAvroLogicalTypes produces for it:
//
//	bytes -> BYTES, string -> STRING, int/long -> INTEGER,
//	long/timestamp-millis -> TIMESTAMP, float/double -> FLOAT,
//	boolean -> BOOLEAN, enum -> STRING;
//	["null", T] -> NULLABLE, anything else REQUIRED;
//	the field's doc -> description (cut to 1024 bytes).
//
// Records, arrays, maps, fixed and unions of more than one non-null type are
// errors: lockstream schemas are flat.
func TableSchema(avroJSON []byte) (bigquery.Schema, error) {
	var rec struct {
		Type   string `json:"type"`
		Name   string `json:"name"`
		Fields []struct {
			Name string          `json:"name"`
			Type json.RawMessage `json:"type"`
			Doc  string          `json:"doc"`
		} `json:"fields"`
	}
	if err := json.Unmarshal(avroJSON, &rec); err != nil {
		return nil, fmt.Errorf("bq: avro schema: %w", err)
	}
	if rec.Type != "record" || len(rec.Fields) == 0 {
		return nil, fmt.Errorf("bq: avro schema %q: want a record with fields", rec.Name)
	}
	out := make(bigquery.Schema, 0, len(rec.Fields))
	for _, f := range rec.Fields {
		ft, nullable, err := avroFieldType(f.Type)
		if err != nil {
			return nil, fmt.Errorf("bq: avro schema %s, field %s: %w", rec.Name, f.Name, err)
		}
		out = append(out, &bigquery.FieldSchema{
			Name:        f.Name,
			Type:        ft,
			Required:    !nullable,
			Description: truncate(f.Doc, maxDescription),
		})
	}
	return out, nil
}

func avroFieldType(raw json.RawMessage) (bigquery.FieldType, bool, error) {
	var union []json.RawMessage
	if err := json.Unmarshal(raw, &union); err == nil {
		var inner json.RawMessage
		nullable := false
		for _, u := range union {
			if string(u) == `"null"` {
				nullable = true
				continue
			}
			if inner != nil {
				return "", false, fmt.Errorf("union of several non-null types is not supported")
			}
			inner = u
		}
		if inner == nil {
			return "", false, fmt.Errorf("union without a non-null type")
		}
		ft, _, err := avroFieldType(inner)
		return ft, nullable, err
	}
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		ft, err := primitiveType(name, "")
		return ft, false, err
	}
	var obj struct {
		Type        string `json:"type"`
		LogicalType string `json:"logicalType"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", false, fmt.Errorf("unreadable type %s", raw)
	}
	if obj.Type == "enum" {
		return bigquery.StringFieldType, false, nil
	}
	ft, err := primitiveType(obj.Type, obj.LogicalType)
	return ft, false, err
}

func primitiveType(name, logical string) (bigquery.FieldType, error) {
	if logical == "timestamp-millis" && name == "long" {
		return bigquery.TimestampFieldType, nil
	}
	// Other logical types: BigQuery loads the underlying type; accept only
	// those we never write, explicitly.
	if logical != "" {
		return "", fmt.Errorf("logical type %s on %s is not supported", logical, name)
	}
	switch name {
	case "bytes":
		return bigquery.BytesFieldType, nil
	case "string":
		return bigquery.StringFieldType, nil
	case "int", "long":
		return bigquery.IntegerFieldType, nil
	case "float", "double":
		return bigquery.FloatFieldType, nil
	case "boolean":
		return bigquery.BooleanFieldType, nil
	}
	return "", fmt.Errorf("avro type %q is not supported", name)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// EncryptedTableSchema is TableSchema of s's encrypted schema.
func EncryptedTableSchema(s *schemas.Schema) (bigquery.Schema, error) {
	return TableSchema(s.Encrypted().JSON)
}

// ident matches the names lockstream puts into SQL (event types, fields,
// categories, project, dataset and table ids).
var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// projectID matches GCP project ids (also domain-scoped ones, "example.com:p").
var projectID = regexp.MustCompile(`^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,61}[a-z0-9]$`)

func checkIDs(project, dataset string, tables ...string) error {
	if !projectID.MatchString(project) {
		return fmt.Errorf("bq: %q is not a project id", project)
	}
	if !ident.MatchString(dataset) {
		return fmt.Errorf("bq: %q is not a dataset id", dataset)
	}
	for _, t := range tables {
		if !ident.MatchString(t) {
			return fmt.Errorf("bq: %q is not a table id", t)
		}
	}
	return nil
}

func quoteTable(project, dataset, table string) string {
	return "`" + project + "." + dataset + "." + table + "`"
}

// sqlString renders s as a GoogleSQL string literal. Only names from the
// schema registry reach it; it still escapes, so no schema can break out.
func sqlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}
