package transforms

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lockstream/lockstream/cache"
)

// env is this process's one registry of worker environments: what the
// DoFns of every run in the process share, because Beam serializes a DoFn
// with its configuration only. Each environment is keyed by the full
// configuration that made it and created on first use (in a DoFn's Setup,
// or the driver's), so two runs of one process with different settings
// never share one, and the first caller's settings never hold for the
// second. It is the package's only mutable package-level state
// (TestOnlyTheRegistryIsMutable).
var env = &registry{
	written:    cache.New[string, *idList](256, cache.Options{}),
	lookback:   cache.New[string, *lookbackEntry](64, cache.Options{}),
	publishing: make(chan struct{}, 1),
}

type registry struct {
	mu sync.Mutex
	// Key sources a process registered by name (RegisterKeys,
	// RegisterKeySource): the "registered:NAME" URLs.
	sources map[string]KeySourceOpener
	// Key sources and their derived-key caches, by URL, scope and cache
	// size (keyEnvFor).
	keys map[keyConfig]*keyEnv
	// What reportKeyActivity last reported of each key source.
	activity map[statser]*sourceActivity
	// Low-level Pub/Sub subscriber clients, by emulator host ("" = Google
	// Cloud).
	subscribers map[string]*vkit.SubscriptionAdminClient

	// Flow control of a worker, by service, subscription, root and run
	// id: shared by the run's pull streams in the process.
	flows sync.Map // string -> *flowControl
	// The write stage's counters of each run, by root and run id
	// (runCounter: a writer takes its run's in Setup).
	runs sync.Map // runKey -> *runCounter
	// The event ids of the dataset files this process wrote, by root, name
	// and checksum (rememberWritten): the next hour's lookback in the same
	// process (prism, hourly --watch) takes them from here instead of
	// reading and inflating the previous hour's files again. Only a file
	// whose manifest names the very checksum it was written with is found.
	// It keeps the files of a few hours of every (type, version).
	written *cache.Cache[string, *idList]
	// The lookback id sets split by shard, per file set (lookbackIDs): the
	// latest few, enough for every (type, version) of one hour's job and
	// the next.
	lookback *cache.Cache[string, *lookbackEntry]
	// One slot: a publication (publishFn) holds it while it holds its
	// part's records, reading and writing on all the worker's cores, so
	// that a job of many hours and types keeps one part's records in
	// memory at a time, not all of them.
	publishing chan struct{}
	// The arena chunks publications gave back (shardArena), reused by the
	// next part: allocated afresh for each part, the last part's were
	// garbage that the collector let the heap grow by, to twice the live
	// heap.
	chunks chunkList

	progress progressCounters
}

type progressCounters struct {
	messages, written, dead, late, acked, ackFailed, held, closed atomic.Int64
}

// flowFor returns the flow control of a run's streams on one
// subscription (key), made with these limits by the first stream set up.
func (r *registry) flowFor(key string, maxMsgs int, maxBytes int64) *flowControl {
	f, _ := r.flows.LoadOrStore(key, &flowControl{maxMsgs: maxMsgs, maxBytes: maxBytes, freed: make(chan struct{})})
	return f.(*flowControl)
}

// subscriber returns the process's low-level subscriber client for the
// emulator at host (host:port), or for the Pub/Sub service that
// $PUBSUB_EMULATOR_HOST names when host is "" (Google Cloud if unset).
func (r *registry) subscriber(ctx context.Context, host string) (*vkit.SubscriptionAdminClient, error) {
	var opts []option.ClientOption
	if host != "" {
		opts = []option.ClientOption{option.WithEndpoint(host), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	} else {
		host = os.Getenv("PUBSUB_EMULATOR_HOST")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.subscribers[host]; c != nil {
		return c, nil
	}
	// The client outlives the context of the Setup that made it.
	c, err := vkit.NewSubscriptionAdminClient(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, fmt.Errorf("transforms: pubsub client: %w", err)
	}
	if r.subscribers == nil {
		r.subscribers = map[string]*vkit.SubscriptionAdminClient{}
	}
	r.subscribers[host] = c
	return c, nil
}

// chunkList is a free list of shardArena chunks (arenaChunk bytes).
type chunkList struct {
	mu   sync.Mutex
	free [][]byte
}

// maxFreeChunks is the most chunks a chunkList keeps (128 MiB): what a
// process holds between parts is at most that, and never more than its
// biggest part's records.
const maxFreeChunks = 32

// get returns an empty chunk: a free one, else a new one.
func (l *chunkList) get() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.free); n > 0 {
		c := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return c[:0]
	}
	return make([]byte, 0, arenaChunk)
}

// put gives c back, unless the list is full.
func (l *chunkList) put(c []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < maxFreeChunks {
		l.free = append(l.free, c[:0])
	}
}
