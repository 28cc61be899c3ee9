package transforms

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/record"
)

func init() {
	beam.RegisterCoder(reflect.TypeOf(Batch{}), encodeBatch, decodeBatch)
	beam.RegisterCoder(reflect.TypeOf(Notice{}), encodeNotice, decodeNotice)
	beam.RegisterType(reflect.TypeOf(ReplayFile{}))
}

// Batch is the element the sources emit: up to a batch size of input
// messages that the anonymize stage handles with one key-service lookup.
// Its event time is a lower bound of the publish times it holds (and never
// behind the source's watermark).
type Batch struct {
	// ID names the batch uniquely within and across runs ("<run>-<source
	// part>-<seq>"); every file written for it carries it, so a retried
	// bundle finds its own earlier files instead of writing new ones.
	ID string
	// Messages in input order.
	Messages []BatchMessage
	// Subscription and AckIDs (one per message, in order) are set by the
	// Pub/Sub source; the write stage acknowledges them once every file of
	// the batch is durable.
	Subscription string
	AckIDs       []string
	// Bad lists replay lines that are not messages (dead-lettered as
	// bad_message by line number, without content).
	Bad []BadLine
}

// BatchMessage is one message of a Batch (record.Message with a coder-friendly
// publish time).
type BatchMessage struct {
	ID            string            `json:"id"`
	PublishMillis int64             `json:"pt"`
	Attributes    map[string]string `json:"a,omitempty"`
	Data          []byte            `json:"d"`
}

// BadLine locates a replay line that could not be parsed.
type BadLine struct {
	File  string `json:"file"` // the replay file's base name
	Line  int64  `json:"line"` // 1-based
	Cause string `json:"cause"`
}

// ReplayFile is the element of the replay source: one input file.
type ReplayFile struct {
	Index int
	Path  string
}

// Records converts the batch's messages to record.Messages.
func (b *Batch) Records() []record.Message {
	out := make([]record.Message, len(b.Messages))
	for i, m := range b.Messages {
		out[i] = record.Message{ID: m.ID, PublishTime: time.UnixMilli(m.PublishMillis).UTC(), Attributes: m.Attributes, Data: m.Data}
	}
	return out
}

// FromRecord converts a record.Message for a Batch.
func FromRecord(m record.Message) BatchMessage {
	return BatchMessage{ID: m.ID, PublishMillis: m.PublishTime.UnixMilli(), Attributes: m.Attributes, Data: m.Data}
}

// Batches are only encoded when a runner moves them between stages (the
// sources fuse with the write stage); JSON keeps the coder obviously right.
func encodeBatch(b Batch) ([]byte, error) { return json.Marshal(b) }

func decodeBatch(p []byte) (Batch, error) {
	var b Batch
	if err := json.Unmarshal(p, &b); err != nil {
		return Batch{}, fmt.Errorf("transforms: decode batch: %w", err)
	}
	return b, nil
}

// Notice is what the write stage tells the completion stage about one
// (type, version, hour) of one batch: the raw file written (if any) and the
// counts. Notices are the only data shuffled by ingest.
type Notice struct {
	Type       string           `json:"type"`
	Version    int              `json:"version"`
	HourMillis int64            `json:"hour"`
	File       string           `json:"file,omitempty"` // object name of the raw file; "" when none
	Records    int64            `json:"records"`
	Dead       map[string]int64 `json:"dead,omitempty"` // dead-lettered messages of this type and hour, by reason
}

// Hour returns the notice's hour.
func (n Notice) Hour() time.Time { return time.UnixMilli(n.HourMillis).UTC() }

func encodeNotice(n Notice) ([]byte, error) { return json.Marshal(n) }

func decodeNotice(p []byte) (Notice, error) {
	var n Notice
	if err := json.Unmarshal(p, &n); err != nil {
		return Notice{}, fmt.Errorf("transforms: decode notice: %w", err)
	}
	return n, nil
}
