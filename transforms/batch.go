package transforms

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
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
	// TimeMillis is the batch's time: its oldest publish time (for replay
	// batches of only bad lines, the previous batch's); bad lines are
	// dead-lettered in its hour.
	TimeMillis int64
}

// Time is the batch's time.
func (b *Batch) Time() time.Time { return time.UnixMilli(b.TimeMillis).UTC() }

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
	File   string `json:"file"`   // the replay file's base name
	Line   int64  `json:"line"`   // 1-based; 0 when unknown (in a later byte range of a large file)
	Offset int64  `json:"offset"` // byte offset of the line
	Cause  string `json:"cause"`
}

// ReplayFile is the element of the replay source: one input file.
type ReplayFile struct {
	Index int
	Path  string
	Part  int   // range number within the file
	Start int64 // byte range [Start, End) of the lines read; End 0 = to the end
	End   int64
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

// Batches cross one shuffle (the reshuffle that spreads them over every
// core), so their coder is a compact binary one: a format byte, then every
// field as uvarint-length-prefixed bytes or a varint, in declaration order.
// Attributes are written sorted by key so equal batches encode equally.
const batchFormat = 3

func encodeBatch(b Batch) ([]byte, error) {
	n := 64 + len(b.ID) + len(b.Subscription)
	for _, m := range b.Messages {
		n += 32 + len(m.ID) + len(m.Data)
		for k, v := range m.Attributes {
			n += 4 + len(k) + len(v)
		}
	}
	for _, a := range b.AckIDs {
		n += 2 + len(a)
	}
	p := make([]byte, 0, n)
	p = append(p, batchFormat)
	p = appendStr(p, b.ID)
	p = binary.AppendUvarint(p, uint64(len(b.Messages)))
	for _, m := range b.Messages {
		p = appendStr(p, m.ID)
		p = binary.AppendVarint(p, m.PublishMillis)
		keys := make([]string, 0, len(m.Attributes))
		for k := range m.Attributes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		p = binary.AppendUvarint(p, uint64(len(keys)))
		for _, k := range keys {
			p = appendStr(p, k)
			p = appendStr(p, m.Attributes[k])
		}
		p = binary.AppendUvarint(p, uint64(len(m.Data)))
		p = append(p, m.Data...)
	}
	p = appendStr(p, b.Subscription)
	p = binary.AppendUvarint(p, uint64(len(b.AckIDs)))
	for _, a := range b.AckIDs {
		p = appendStr(p, a)
	}
	p = binary.AppendVarint(p, b.TimeMillis)
	p = binary.AppendUvarint(p, uint64(len(b.Bad)))
	for _, x := range b.Bad {
		p = appendStr(p, x.File)
		p = binary.AppendVarint(p, x.Line)
		p = binary.AppendVarint(p, x.Offset)
		p = appendStr(p, x.Cause)
	}
	return p, nil
}

func appendStr(p []byte, s string) []byte {
	p = binary.AppendUvarint(p, uint64(len(s)))
	return append(p, s...)
}

// batchReader decodes what encodeBatch wrote; the first error sticks.
type batchReader struct {
	p   []byte
	err error
}

func (r *batchReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.p)
	if n <= 0 {
		r.err = errors.New("bad uvarint")
		return 0
	}
	r.p = r.p[n:]
	return v
}

func (r *batchReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.p)
	if n <= 0 {
		r.err = errors.New("bad varint")
		return 0
	}
	r.p = r.p[n:]
	return v
}

func (r *batchReader) bytes() []byte {
	l := r.uvarint()
	if r.err != nil {
		return nil
	}
	if l > uint64(len(r.p)) {
		r.err = errors.New("truncated")
		return nil
	}
	b := r.p[:l:l]
	r.p = r.p[l:]
	return b
}

func (r *batchReader) count() int {
	c := r.uvarint()
	if c > uint64(len(r.p)) { // every item takes at least one byte
		r.err = errors.New("bad count")
		return 0
	}
	return int(c)
}

func decodeBatch(p []byte) (Batch, error) {
	if len(p) == 0 || p[0] != batchFormat {
		return Batch{}, errors.New("transforms: decode batch: unknown format")
	}
	r := &batchReader{p: p[1:]}
	var b Batch
	b.ID = string(r.bytes())
	if n := r.count(); n > 0 {
		b.Messages = make([]BatchMessage, n)
		for i := range b.Messages {
			m := &b.Messages[i]
			m.ID = string(r.bytes())
			m.PublishMillis = r.varint()
			if na := r.count(); na > 0 {
				m.Attributes = make(map[string]string, na)
				for range na {
					k := string(r.bytes())
					m.Attributes[k] = string(r.bytes())
				}
			}
			m.Data = r.bytes()
		}
	}
	b.Subscription = string(r.bytes())
	if n := r.count(); n > 0 {
		b.AckIDs = make([]string, n)
		for i := range b.AckIDs {
			b.AckIDs[i] = string(r.bytes())
		}
	}
	b.TimeMillis = r.varint()
	if n := r.count(); n > 0 {
		b.Bad = make([]BadLine, n)
		for i := range b.Bad {
			b.Bad[i] = BadLine{File: string(r.bytes()), Line: r.varint(), Offset: r.varint(), Cause: string(r.bytes())}
		}
	}
	if r.err == nil && len(r.p) != 0 {
		r.err = errors.New("trailing bytes")
	}
	if r.err != nil {
		return Batch{}, fmt.Errorf("transforms: decode batch: %w", r.err)
	}
	return b, nil
}

// Notice is what writing one batch did for one (type, version, hour): the
// raw or late file written (if any) and the counts.
type Notice struct {
	Type       string           `json:"type"`
	Version    int              `json:"version"`
	HourMillis int64            `json:"hour"`
	File       string           `json:"file,omitempty"` // object name of the raw file; "" when none
	Records    int64            `json:"records"`
	Dead       map[string]int64 `json:"dead,omitempty"` // dead-lettered messages of this type and hour, by reason
	Late       bool             `json:"late,omitempty"` // File is in late/: the hour was complete
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
