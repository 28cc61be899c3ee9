package synth

import (
	"math/rand/v2"
	"time"

	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// StreamConfig shapes an endless stream of valid events (the traffic of
// `lockstream publish`).
type StreamConfig struct {
	// Schemas are the types and versions sent, in turn (at least one).
	Schemas []*schemas.Schema
	// Users is the number of distinct users (default 1000); each event's
	// user is drawn from them.
	Users int
	// First is the number of the first event: event ids are
	// "ev-<type>-<n>" (FromSchema), so two streams whose numbers overlap
	// send the same events (a later hourly deduplicates them).
	First int
	Seed  uint64
}

// Stream generates valid events of any registered type from its schema
// alone (FromSchema), with a publish time the caller gives. It is for one
// goroutine.
type Stream struct {
	cfg StreamConfig
	r   *rand.Rand
	n   int
}

// NewStream returns the stream of cfg.
func NewStream(cfg StreamConfig) *Stream {
	if cfg.Users <= 0 {
		cfg.Users = 1000
	}
	return &Stream{cfg: cfg, r: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)), n: cfg.First}
}

// Next returns the next event, published at at. Its message id is
// FromSchema's; a publisher replaces it with the one Pub/Sub assigns.
func (s *Stream) Next(at time.Time) record.Message {
	sc := s.cfg.Schemas[(s.n-s.cfg.First)%len(s.cfg.Schemas)]
	m := FromSchema(sc, s.n, User(s.r.IntN(s.cfg.Users)), at)
	s.n++
	return m
}
