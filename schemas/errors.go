package schemas

import "errors"

// Reasons a message is rejected. They are stable: they name dead-letter
// directories (<root>/deadletter/<reason>/...) and metric labels.
const (
	ReasonMalformedJSON    = "malformed_json"     // not one well-formed JSON object (incl. trailing data)
	ReasonInvalidUTF8      = "invalid_utf8"       // a string is not valid UTF-8 (incl. lone \u surrogates)
	ReasonUnknownField     = "unknown_field"      // a member not in the schema, with unknown_fields=reject
	ReasonMissingField     = "missing_field"      // a field without default is absent
	ReasonWrongType        = "wrong_type"         // JSON type does not fit the field (incl. null in a required field)
	ReasonOutOfRange       = "out_of_range"       // number too large/small for the field
	ReasonDuplicateField   = "duplicate_field"    // a schema field appears twice in the object
	ReasonTooDeep          = "too_deep"           // nesting deeper than MaxDepth
	ReasonInvalidValue     = "invalid_value"      // right type, bad value (enum symbol, timestamp text, base64, empty key)
	ReasonUnknownEventType = "unknown_event_type" // for callers: event_type attribute not registered
	ReasonUnknownVersion   = "unknown_version"    // for callers: schema_version not registered
	ReasonOversized        = "oversized"          // for callers: message larger than they accept
)

// Reasons returns every reason code, sorted.
func Reasons() []string {
	return []string{
		ReasonDuplicateField, ReasonInvalidUTF8, ReasonInvalidValue, ReasonMalformedJSON,
		ReasonMissingField, ReasonOutOfRange, ReasonOversized, ReasonTooDeep,
		ReasonUnknownEventType, ReasonUnknownField, ReasonUnknownVersion, ReasonWrongType,
	}
}

// ValidationError says why a payload was rejected. Its text never contains any
// byte of the payload: Path names a schema field (or "$" for the whole object),
// Rule describes the expectation, positions are byte offsets.
type ValidationError struct {
	Reason string // one of the Reason* constants
	Path   string // "$", "$.<schema field>", or an attribute name
	Rule   string // what was expected, e.g. "expected long"

	cause error
}

func (e *ValidationError) Error() string {
	return e.Reason + ": " + e.Path + ": " + e.Rule
}

// Unwrap returns ErrUnknownEventType / ErrUnknownVersion for those reasons.
func (e *ValidationError) Unwrap() error { return e.cause }

// ReasonOf returns the Reason of the first *ValidationError in err's chain, or "".
func ReasonOf(err error) string {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}
