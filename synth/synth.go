package synth

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/lockstream/lockstream/record"
)

// Config shapes the traffic.
type Config struct {
	Start         time.Time // first hour (truncated to the hour)
	Hours         int       // span in hours (default 3)
	Events        int       // unique events (default 3000)
	Users         int       // distinct users (default 200)
	DuplicateRate float64   // share of events delivered twice (default 0.05)
	MalformedRate float64   // share of extra malformed messages (default 0.01)
	LateRate      float64   // share of extra events published after their hour (default 0.01)
	Seed          uint64
	// PlaybackVersion is the schema version of the PlaybackEvents (1, the
	// default, or 3: with a device_ref, encrypted deterministically).
	PlaybackVersion int
}

// Traffic is generated input.
type Traffic struct {
	Messages []record.Message // in publish order
	// Unique is the number of distinct valid events (distinct event ids).
	Unique int
	// Duplicates counts extra deliveries of valid events.
	Duplicates int
	// Malformed counts messages that must be dead-lettered.
	Malformed int
	// Late counts valid events whose publish time is in a later hour than
	// their event time (published late).
	Late     int
	Canaries []string
	Users    []string
}

func (c *Config) defaults() {
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	}
	c.Start = c.Start.UTC().Truncate(time.Hour)
	if c.Hours <= 0 {
		c.Hours = 3
	}
	if c.Events <= 0 {
		c.Events = 3000
	}
	if c.Users <= 0 {
		c.Users = 200
	}
	if c.DuplicateRate == 0 {
		c.DuplicateRate = 0.05
	}
	if c.MalformedRate == 0 {
		c.MalformedRate = 0.01
	}
	if c.LateRate == 0 {
		c.LateRate = 0.01
	}
	if c.PlaybackVersion == 0 {
		c.PlaybackVersion = 1
	}
}

// User returns the user id of user n (itself a canary: user ids are PII).
func User(n int) string { return fmt.Sprintf("pii-user-%04d", n) }

// Email returns user n's e-mail canary.
func Email(n int) string { return fmt.Sprintf("pii-email-%04d@example.com", n) }

// IP returns a canary IP address for event n.
func IP(n int) string { return fmt.Sprintf("10.%d.%d.%d", 100+n%100, (n/100)%250, n%250) }

// Generate makes traffic for cfg.
func Generate(cfg Config) *Traffic {
	cfg.defaults()
	r := rand.New(rand.NewPCG(cfg.Seed, 0x6c6f636b))
	tr := &Traffic{}
	span := time.Duration(cfg.Hours) * time.Hour
	seen := map[string]bool{}
	for u := 0; u < cfg.Users; u++ {
		tr.Users = append(tr.Users, User(u))
		tr.Canaries = append(tr.Canaries, User(u), Email(u), "pii-name-"+strconv.Itoa(u))
		if cfg.PlaybackVersion >= 3 {
			tr.Canaries = append(tr.Canaries, DeviceRef(u))
		}
	}
	msgID := 0
	next := func() string { msgID++; return fmt.Sprintf("msg-%07d", msgID) }
	add := func(m record.Message) { tr.Messages = append(tr.Messages, m) }
	for i := 0; i < cfg.Events; i++ {
		u := r.IntN(cfg.Users)
		at := cfg.Start.Add(time.Duration(r.Int64N(int64(span))))
		at = at.Truncate(time.Millisecond)
		m := event(i, u, at, cfg.PlaybackVersion)
		m.ID = next()
		add(m)
		if ip := IP(i); !seen[ip] {
			seen[ip] = true
			tr.Canaries = append(tr.Canaries, ip)
		}
		if r.Float64() < cfg.DuplicateRate {
			tr.Duplicates++
			d := m
			switch r.IntN(3) {
			case 0: // redelivery: same message
			case 1: // client retry: new message id, a little later
				d.ID = next()
				d.PublishTime = m.PublishTime.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
			case 2: // retry that crosses into the next hour
				d.ID = next()
				d.PublishTime = m.PublishTime.Truncate(time.Hour).Add(time.Hour + time.Duration(r.IntN(5000))*time.Millisecond)
				if !d.PublishTime.Before(cfg.Start.Add(span)) {
					d.PublishTime = m.PublishTime // keep it inside the span
				}
			}
			add(d)
		}
	}
	tr.Unique = cfg.Events
	nLate := int(float64(cfg.Events) * cfg.LateRate)
	if cfg.Hours < 2 {
		nLate = 0 // late means published in a later hour of the span
	}
	for i := 0; i < nLate; i++ {
		u := r.IntN(cfg.Users)
		at := cfg.Start.Add(time.Duration(r.Int64N(int64(span - time.Hour))))
		m := event(cfg.Events+i, u, at.Truncate(time.Millisecond), cfg.PlaybackVersion)
		m.ID = next()
		// Published well after its event time: lands in a later hour.
		m.PublishTime = at.Add(time.Hour + 10*time.Minute).Truncate(time.Millisecond)
		if !m.PublishTime.Before(cfg.Start.Add(span)) {
			m.PublishTime = cfg.Start.Add(span - time.Second)
		}
		add(m)
		tr.Unique++
		tr.Late++
	}
	nBad := int(float64(cfg.Events) * cfg.MalformedRate)
	for i := 0; i < nBad; i++ {
		at := cfg.Start.Add(time.Duration(r.Int64N(int64(span)))).Truncate(time.Millisecond)
		m := malformed(i, r.IntN(cfg.Users), at)
		m.ID = next()
		add(m)
		tr.Malformed++
	}
	sort.SliceStable(tr.Messages, func(a, b int) bool { return tr.Messages[a].PublishTime.Before(tr.Messages[b].PublishTime) })
	return tr
}

// DeviceRef returns the device reference of user n's device (PlaybackEvent
// v3; a canary: it is personal).
func DeviceRef(n int) string { return fmt.Sprintf("pii-devref-%04d", n) }

func event(i, u int, at time.Time, playbackVersion int) record.Message {
	var data string
	var typ string
	version := "1"
	if i%4 == 3 {
		typ = "AccountUpdate"
		birth := "null"
		if i%3 != 0 {
			birth = strconv.Itoa(1950 + i%50)
		}
		data = fmt.Sprintf(`{"event_id":"ev-%07d","user_id":%q,"timestamp":%q,"email":%q,"display_name":"pii-name-%d","birth_year":%s}`,
			i, User(u), at.Add(-time.Second).Format("2006-01-02T15:04:05.000Z"), Email(u), u, birth)
	} else {
		typ = "PlaybackEvent"
		data = fmt.Sprintf(`{"event_id":"ev-%07d","user_id":%q,"timestamp":%d,"track_id":"track-%d","ms_played":%d,"country":"SE","ip_address":%q,"device_id":"pii-device-%d"`,
			i, User(u), at.Add(-time.Second).UnixMilli(), i%500, 1000+i%300000, IP(i), u)
		if playbackVersion >= 3 {
			version = strconv.Itoa(playbackVersion)
			data += fmt.Sprintf(`,"device_ref":%q`, DeviceRef(u))
		}
		data += "}"
	}
	return record.Message{PublishTime: at, Attributes: map[string]string{record.AttrEventType: typ, record.AttrSchemaVersion: version}, Data: []byte(data)}
}

func malformed(i, u int, at time.Time) record.Message {
	pb := map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"}
	var data string
	switch i % 5 {
	case 0:
		data = fmt.Sprintf(`{"event_id":"bad-%d","user_id":%q,"timestamp":1,`, i, User(u)) // truncated JSON
	case 1:
		data = fmt.Sprintf(`{"event_id":"bad-%d","user_id":%q,"timestamp":1,"track_id":"t","ms_played":"lots","country":"SE","ip_address":%q,"device_id":"d"}`, i, User(u), IP(i))
	case 2:
		data = fmt.Sprintf(`{"event_id":"bad-%d","user_id":%q,"timestamp":1,"track_id":"t","ms_played":1,"country":"SE","device_id":"d"}`, i, User(u))
	case 3:
		data = fmt.Sprintf(`{"event_id":"bad-%d","user_id":%q,"timestamp":1,"track_id":"t","ms_played":1,"country":"SE","ip_address":%q,"device_id":"d","shoe_size":44}`, i, User(u), IP(i))
	default:
		pb = map[string]string{record.AttrEventType: "NoSuchEvent", record.AttrSchemaVersion: "1"}
		data = fmt.Sprintf(`{"user_id":%q}`, User(u))
	}
	return record.Message{PublishTime: at, Attributes: pb, Data: []byte(data)}
}
