package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Attribute names of the input contract.
const (
	AttrEventType     = "event_type"
	AttrSchemaVersion = "schema_version"
)

// Message is one input message: a Pub/Sub message, or one line of a replay
// file (NDJSON) in exactly the same shape:
//
//	{"id":"…","publish_time":"2026-11-23T06:12:00.123Z",
//	 "attributes":{"event_type":"PlaybackEvent","schema_version":"1"},
//	 "data":"<the event as a JSON object, as a string>"}
type Message struct {
	ID          string            `json:"id"`
	PublishTime time.Time         `json:"publish_time"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Data        []byte            `json:"-"`
}

type wireMessage struct {
	ID          string            `json:"id"`
	PublishTime string            `json:"publish_time"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Data        *string           `json:"data"`
}

// ErrBadLine is wrapped by ParseLine errors: the line is not a message.
var ErrBadLine = errors.New("record: not a message line")

// ParseLine parses one replay-file line. Its errors never quote the line.
func ParseLine(line []byte) (Message, error) {
	return parseLine(line, nil)
}

// LineParser parses replay-file lines as ParseLine does, for one reader at
// a time. Messages whose attributes are byte-identical to those of one of
// the last few lines it parsed share one map: like every Message's
// Attributes, it is read-only.
type LineParser struct {
	memo attrMemo
}

// Parse parses one line (see ParseLine).
func (p *LineParser) Parse(line []byte) (Message, error) {
	return parseLine(line, &p.memo)
}

func parseLine(line []byte, memo *attrMemo) (Message, error) {
	w, data, ok := scanLine(line, memo)
	if !ok {
		if err := json.Unmarshal(line, &w); err != nil {
			return Message{}, fmt.Errorf("%w: not a JSON object of the message shape", ErrBadLine)
		}
		if w.Data != nil {
			data = []byte(*w.Data)
		}
	}
	if w.ID == "" {
		return Message{}, fmt.Errorf("%w: missing id", ErrBadLine)
	}
	if data == nil {
		return Message{}, fmt.Errorf("%w: missing data", ErrBadLine)
	}
	t, err := time.Parse(time.RFC3339Nano, w.PublishTime)
	if err != nil {
		return Message{}, fmt.Errorf("%w: publish_time is not RFC 3339", ErrBadLine)
	}
	return Message{ID: w.ID, PublishTime: t.UTC(), Attributes: w.Attributes, Data: data}, nil
}

// MarshalLine formats m as one replay-file line (without the newline).
func (m Message) MarshalLine() ([]byte, error) {
	d := string(m.Data)
	return json.Marshal(wireMessage{
		ID:          m.ID,
		PublishTime: m.PublishTime.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Attributes:  m.Attributes,
		Data:        &d,
	})
}

// EventType and SchemaVersion read the routing attributes.
func (m Message) EventType() string { return m.Attributes[AttrEventType] }

// SchemaVersion returns the schema_version attribute as an int (0 if absent
// or not a positive integer).
func (m Message) SchemaVersion() int {
	v, err := strconv.Atoi(m.Attributes[AttrSchemaVersion])
	if err != nil || v < 1 {
		return 0
	}
	return v
}

// Hour returns the UTC hour a publish time belongs to.
func Hour(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }
