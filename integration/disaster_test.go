package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// The key service as Padlock runs it (issue 25): two deployment groups,
// each one `lockstream keys serve` process with its own memcached (group
// b's behind a proxy that can corrupt what it returns), over one Bigtable
// emulator table, behind the ingest of a continuous Pub/Sub stream whose
// key client lists both groups. Each disaster hits the stream in the
// middle; each must lose, duplicate and dead-letter nothing, and every
// record must decrypt to its input under its own user's keychain. The
// throughput dip and the pipeline's key p99 during the fault are printed.

const disasterAdminSecret = "disaster-admin-secret-00001"

// Stream shape: disasterEvents over ~disasterPublish, the fault from
// disasterFaultAt for disasterFault.
const (
	disasterEvents  = 2400
	disasterUsers   = 200
	disasterPublish = 16 * time.Second
	disasterFaultAt = 4 * time.Second
	disasterFault   = 10 * time.Second
)

// keyPod is one `lockstream keys serve` process.
type keyPod struct {
	name, addr, memcached string
	bin                   string
	log                   *lockedBuffer
	cmd                   *exec.Cmd
	exited                chan struct{}
}

func (p *keyPod) url() string { return "http://" + p.addr }

// keyGroup is a deployment group: its pods behind one address (group a:
// its one pod; group b: a round-robin HTTP load balancer over two pods
// that share the group's memcached, so that one pod reads what the other
// cached).
type keyGroup struct {
	name string
	addr string
	pods []*keyPod
}

func (g *keyGroup) url() string { return "http://" + g.addr }

type disasterRig struct {
	bin, dir, store, mkFile, svcFile string
	a, b                             *keyGroup
	badMC                            *badMemcached // group b's memcached
}

func startDisasterRig(t *testing.T) *disasterRig {
	t.Helper()
	r := &disasterRig{bin: buildCLI(t), dir: t.TempDir()}
	storetest.BigtableEmulator(t)
	r.store = fmt.Sprintf("bigtable://disaster/keys/t%d?create=true", time.Now().UnixNano())
	r.mkFile = filepath.Join(r.dir, "master.key")
	if err := os.WriteFile(r.mkFile, []byte(keyservice.GenerateMasterKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	svcs, _ := json.Marshal(map[string]any{"services": []server.ServiceConfig{
		{Name: "pipeline", SecretSHA256: server.HashSecret(scenarioKeySecret), Scopes: []string{"*"}, Categories: []string{"*"}, Mode: server.ModeDecrypt},
		{Name: "ops", SecretSHA256: server.HashSecret(disasterAdminSecret), Categories: []string{"*"}, Mode: server.ModeNone, Admin: true},
	}})
	r.svcFile = filepath.Join(r.dir, "services.json")
	if err := os.WriteFile(r.svcFile, svcs, 0o600); err != nil {
		t.Fatal(err)
	}
	r.badMC = startBadMemcached(t, storetest.Memcached(t))
	pod := func(name, memcached string) *keyPod {
		return &keyPod{name: name, addr: "127.0.0.1:" + strconv.Itoa(storetest.FreePort(t)), memcached: memcached, bin: r.bin, log: &lockedBuffer{}}
	}
	a := pod("a", storetest.Memcached(t))
	r.a = &keyGroup{name: "a", addr: a.addr, pods: []*keyPod{a}}
	r.b = &keyGroup{name: "b", pods: []*keyPod{pod("b1", r.badMC.addr), pod("b2", r.badMC.addr)}}
	r.b.addr = startRoundRobin(t, r.b.pods)
	t.Cleanup(func() {
		for _, g := range []*keyGroup{r.a, r.b} {
			for _, p := range g.pods {
				r.stop(p, syscall.SIGKILL)
			}
		}
	})
	for _, p := range slices.Concat(r.a.pods, r.b.pods) {
		r.start(t, p)
	}
	t.Setenv(transforms.KeysSecretEnv, scenarioKeySecret)
	return r
}

// startRoundRobin serves, on a new loopback address, an HTTP load
// balancer that sends each request to the next of pods.
func startRoundRobin(t *testing.T, pods []*keyPod) string {
	t.Helper()
	var next atomic.Int64
	var proxies []*httputil.ReverseProxy
	for _, p := range pods {
		u, _ := url.Parse(p.url())
		proxies = append(proxies, httputil.NewSingleHostReverseProxy(u))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		proxies[int(next.Add(1))%len(proxies)].ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// start runs pod p's `keys serve` (p.bin) and waits until /readyz answers.
func (r *disasterRig) start(t *testing.T, p *keyPod) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "keys", "serve", "--listen", p.addr, "--store", r.store,
		"--master-key-file", r.mkFile, "--services", r.svcFile, "--memcached", p.memcached,
		"--audit-log", filepath.Join(r.dir, "audit-"+p.name+".jsonl"))
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.exited)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(p.url() + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("key server %s exited:\n%s", p.name, p.log.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("key server %s not ready within 60s:\n%s", p.name, p.log.Bytes())
		}
	}
}

// stop sends sig to pod p's process and waits for it to end.
func (r *disasterRig) stop(p *keyPod, sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// metric sums the samples of a metric on the /metrics of group g's pods by
// their label set ("" for none).
func metric(t *testing.T, g *keyGroup, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, p := range g.pods {
		podMetric(t, p, name, out)
	}
	return out
}

func podMetric(t *testing.T, p *keyPod, name string, out map[string]float64) {
	t.Helper()
	resp, err := http.Get(p.url() + "/metrics")
	if err != nil {
		t.Fatalf("key server %s /metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		labels := strings.TrimSpace(line[len(name):i])
		out[labels] += v
	}
}

func total(m map[string]float64) (n float64) {
	for _, v := range m {
		n += v
	}
	return n
}

// keyRecorder is the pipeline's key source: a keyclient.Client over both
// groups, recording when each lookup answered, for how many users, and how
// long it took.
type keyRecorder struct {
	c  *keyclient.Client
	mu sync.Mutex
	ev []keyEvent
}

type keyEvent struct {
	at    time.Time
	users int
	took  time.Duration
}

func (k *keyRecorder) ForEncrypt(ctx context.Context, users, cats []string) ([]keyclient.UserKeys, error) {
	start := time.Now()
	res, err := k.c.ForEncrypt(ctx, users, cats)
	if err == nil {
		k.mu.Lock()
		k.ev = append(k.ev, keyEvent{at: time.Now(), users: len(users), took: time.Since(start)})
		k.mu.Unlock()
	}
	return res, err
}

func (k *keyRecorder) ForDecrypt(ctx context.Context, subjects, cats []string) ([]keyclient.UserKeys, error) {
	return k.c.ForDecrypt(ctx, subjects, cats)
}

func (k *keyRecorder) Purge() { k.c.Purge() }

// window is the users looked up per second and the lookups' p99 in
// [from, to).
func (k *keyRecorder) window(from, to time.Time) (perSec float64, p99 time.Duration, calls int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var lat []time.Duration
	users := 0
	for _, e := range k.ev {
		if !e.at.Before(from) && e.at.Before(to) {
			users += e.users
			lat = append(lat, e.took)
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		p99 = lat[len(lat)*99/100]
	}
	return float64(users) / to.Sub(from).Seconds(), p99, len(lat)
}

// ingestRate samples the process's ingest counters (messages written,
// dead-lettered or late) to give the ingest throughput in a window.
type ingestRate struct {
	mu      sync.Mutex
	samples []rateSample
	stop    chan struct{}
	done    chan struct{}
}

type rateSample struct {
	at       time.Time
	messages int64
}

func sampleIngest() *ingestRate {
	r := &ingestRate{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			r.mu.Lock()
			r.samples = append(r.samples, rateSample{time.Now(), transforms.ReadProgress().Messages})
			r.mu.Unlock()
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

func (r *ingestRate) end() { close(r.stop); <-r.done }

// rate is the messages per second ingested in [from, to) (between the
// samples nearest inside it), and the slowest whole second in it.
func (r *ingestRate) rate(from, to time.Time) (perSec, slowest float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var in []rateSample
	for _, s := range r.samples {
		if !s.at.Before(from) && !s.at.After(to) {
			in = append(in, s)
		}
	}
	if len(in) < 2 {
		return 0, 0
	}
	first, last := in[0], in[len(in)-1]
	perSec = float64(last.messages-first.messages) / last.at.Sub(first.at).Seconds()
	slowest = -1
	for i, s := range in {
		for _, e := range in[i+1:] {
			if e.at.Sub(s.at) >= time.Second {
				if n := float64(e.messages-s.messages) / e.at.Sub(s.at).Seconds(); slowest < 0 || n < slowest {
					slowest = n
				}
				break
			}
		}
	}
	return perSec, max(slowest, 0)
}

// disasterStream ingests a paced Pub/Sub stream through a key client over
// the groups in order (the first is the client's nearest), runs fault at
// disasterFaultAt (it returns when the fault is over), then publishes the
// hours and checks every invariant and every record's decryption. It
// prints the figures and returns the key client's stats.
func (r *disasterRig) disasterStream(t *testing.T, name string, seed uint64, order []*keyGroup, fault func()) keyclient.MultiStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var urls []string
	for _, g := range order {
		urls = append(urls, g.url())
	}
	// No client cache: every batch asks the key service, so the fault is
	// met by every batch that runs during it.
	kc, err := keyclient.Open(ctx, strings.Join(urls, ","), keyclient.Options{Scope: transforms.DefaultKeyScope, Secret: scenarioKeySecret, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	rec := &keyRecorder{c: kc}
	keysURL := transforms.RegisterKeys("disaster-"+name, rec)

	sub, publish, _ := scenarioPubSub(t, ctx, "disaster-"+name)
	tr := synth.Generate(synth.Config{Events: disasterEvents, Users: disasterUsers, Hours: 1, Seed: seed})
	var sent []record.Message
	published := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(published)
		const chunks = 40
		for i := range chunks {
			lo, hi := i*len(tr.Messages)/chunks, (i+1)*len(tr.Messages)/chunks
			sent = append(sent, publish(tr.Messages[lo:hi])...)
			if d := time.Until(start.Add(time.Duration(i+1) * disasterPublish / chunks)); d > 0 {
				time.Sleep(d)
			}
		}
	}()
	var faultFrom, faultTo time.Time
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		time.Sleep(disasterFaultAt)
		faultFrom = time.Now()
		fault()
		faultTo = time.Now()
	}()
	root := t.TempDir()
	logs := &lockedBuffer{}
	rate := sampleIngest()
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: root, KeysURL: keysURL,
		IdleTimeout: 5 * time.Second, BatchSize: 100, KeyRetryBudget: 3 * time.Second, Progress: logs, ProgressEvery: 2 * time.Second})
	rate.end()
	<-published
	<-faultDone
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, r.logs(logs))
	}
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	s := invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "disaster-" + name, Root: root, Sent: sent, Canaries: tr.Canaries,
		Logs: r.logs(logs), Ingest: res.Rows, NoDead: []string{record.ReasonKeyUnavailable}, KeysURL: keysURL,
		Readable: []string{synth.IP(0), synth.IP(1), synth.IP(2)}})
	if s.Dead != int64(s.Invalid) || s.Lost != 0 || s.Dups != 0 {
		t.Fatalf("%d dead-lettered for %d invalid messages, %d lost, %d duplicated", s.Dead, s.Invalid, s.Lost, s.Dups)
	}
	r.checkDecryptsToInput(t, ctx, root, keysURL, sent)

	before, _ := rate.rate(start.Add(time.Second), faultFrom)
	during, slowest := rate.rate(faultFrom, faultTo)
	_, p99Before, _ := rec.window(start.Add(time.Second), faultFrom)
	_, p99During, calls := rec.window(faultFrom, faultTo)
	dip := 0.0
	if before > 0 {
		dip = 100 * (1 - during/before)
	}
	es, _ := kc.EndpointStats()
	t.Logf("disaster %s: ingest %.0f msg/s before the fault, %.0f during its %.0f s (dip %.0f%%; slowest second %.0f msg/s; published at %.0f msg/s); pipeline key p99 %v before, %v during (%d lookups); calls: %s",
		name, before, during, faultTo.Sub(faultFrom).Seconds(), dip, slowest, float64(len(tr.Messages))/disasterPublish.Seconds(),
		p99Before.Round(time.Millisecond), p99During.Round(time.Millisecond), calls, es)
	return es
}

func (r *disasterRig) logs(ingest *lockedBuffer) []byte {
	out := ingest.Bytes()
	for _, p := range slices.Concat(r.a.pods, r.b.pods) {
		out = append(out, p.log.Bytes()...)
	}
	return out
}

// checkDecryptsToInput decrypts every published hour (view) and compares
// each record with the message it came from: every PII field decrypts to
// the input's value, and each record's _subject is its own user's (the
// admin API's answer for the user id of the input): no record was
// encrypted under another user's keychain.
func (r *disasterRig) checkDecryptsToInput(t *testing.T, ctx context.Context, root, keysURL string, sent []record.Message) {
	t.Helper()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	type input struct {
		user   string
		fields map[string]any
		pii    []string
	}
	byID := map[string]input{}
	for _, m := range sent {
		sch, err := reg.Resolve(m.EventType(), m.Attributes[record.AttrSchemaVersion])
		if err != nil {
			continue
		}
		var p map[string]any
		if json.Unmarshal(m.Data, &p) != nil {
			continue
		}
		id, _ := p["event_id"].(string)
		user, _ := p["user_id"].(string)
		in := input{user: user, fields: p}
		for _, f := range sch.PIIFields() {
			if f.Name != sch.Subject().Name {
				in.pii = append(in.pii, f.Name)
			}
		}
		byID[sch.Type+"/"+id] = in
	}
	admin, err := keyclient.NewAdmin(r.a.url()+","+r.b.url(), disasterAdminSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	subjectOf := map[string]string{}
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.DatasetsArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	hours := map[layout.Hour]bool{}
	for _, n := range names {
		if area, h, file, ok := layout.ParseDir(n); ok && area == layout.DatasetsArea && file == "_SUCCESS" {
			hours[h] = true
		}
	}
	checked, wrong := 0, 0
	for h := range hours {
		out := filepath.Join(t.TempDir(), "view.ndjson")
		if _, err := pipelines.View(ctx, pipelines.ViewConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Out: out, KeysURL: keysURL}); err != nil {
			t.Fatalf("view %s: %v", h, err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("view output: %v", err)
			}
			id, _ := got["event_id"].(string)
			in, ok := byID[h.Type+"/"+id]
			if !ok {
				t.Fatalf("%s event %s was never sent", h.Type, id)
			}
			subject, _ := got["_subject"].(string)
			want, ok := subjectOf[in.user]
			if !ok {
				kc, err := admin.Show(ctx, in.user)
				if err != nil {
					t.Fatalf("show the user of %s event %s: %v", h.Type, id, err)
				}
				want = kc.Subject
				subjectOf[in.user] = want
			}
			bad := subject != want
			for _, f := range in.pii {
				g, _ := json.Marshal(got[f])
				w, _ := json.Marshal(in.fields[f])
				bad = bad || !bytes.Equal(g, w)
			}
			if bad {
				wrong++ // never print the values: they are PII canaries
			}
			checked++
		}
	}
	if checked == 0 || wrong > 0 {
		t.Fatalf("%d of %d records do not decrypt to their input under their own user's keychain", wrong, checked)
	}
	t.Logf("%d records decrypt to their input, each under its own user's keychain (%d users)", checked, len(subjectOf))
}

// TestDisasterKeyServiceGroups runs the three disasters of issue 25 on one
// rig, one stream each: (a) group a, the client's nearest, is killed
// (SIGKILL) mid-stream and comes back after the fault; (b) group b, now the
// nearest, has its memcached return corrupted and swapped entries; (c)
// group a is restarted with a new build version while b serves (a canary).
func TestDisasterKeyServiceGroups(t *testing.T) {
	r := startDisasterRig(t)

	t.Run("a-kill-group-a", func(t *testing.T) {
		es := r.disasterStream(t, "kill-a", 2501, []*keyGroup{r.a, r.b}, func() {
			r.stop(r.a.pods[0], syscall.SIGKILL)
			time.Sleep(disasterFault)
			r.start(t, r.a.pods[0])
		})
		// a is found down by the first call that fails there (a failover)
		// or by its readiness probe (every second), whichever comes first:
		// either leaves its last error. Then b, second in order, takes the
		// calls.
		if es.Endpoints[1].Calls == 0 || es.Failovers+es.Endpoints[0].Failures == 0 && es.Endpoints[0].LastError == "" {
			t.Fatalf("group b took no calls while a was down, or a was never found down: %s", es)
		}
	})

	t.Run("b-corrupt-memcached-b", func(t *testing.T) {
		before := total(metric(t, r.b, "lockstream_keys_cache_rejected_total"))
		es := r.disasterStream(t, "corrupt-b", 2502, []*keyGroup{r.b, r.a}, func() {
			r.badMC.corrupting.Store(true)
			time.Sleep(disasterFault)
			r.badMC.corrupting.Store(false)
		})
		rejected := metric(t, r.b, "lockstream_keys_cache_rejected_total")
		t.Logf("group b's memcached: %d values flipped, %d swapped; group b rejected %v (%.0f during the stream); %s",
			r.badMC.flipped.Load(), r.badMC.swapped.Load(), rejected, total(rejected)-before, es)
		if r.badMC.flipped.Load() == 0 || r.badMC.swapped.Load() == 0 || total(rejected)-before == 0 {
			t.Fatal("the corrupting memcached was never read: the fault did not happen")
		}
	})

	t.Run("c-canary-restart-a", func(t *testing.T) {
		canary := filepath.Join(t.TempDir(), "lockstream-canary")
		if out, err := exec.Command("go", "build", "-ldflags", "-X main.buildVersion=disaster-canary", "-o", canary,
			"github.com/lockstream/lockstream/cmd/lockstream").CombinedOutput(); err != nil {
			t.Fatalf("building the canary: %v\n%s", err, out)
		}
		old := metric(t, r.a, "lockstream_keys_build_info")
		var served float64
		es := r.disasterStream(t, "canary-a", 2503, []*keyGroup{r.a, r.b}, func() {
			r.stop(r.a.pods[0], syscall.SIGTERM)
			r.a.pods[0].bin = canary
			r.start(t, r.a.pods[0])
			time.Sleep(disasterFault)
			served = total(metric(t, r.a, "lockstream_keys_requests_total"))
		})
		info := metric(t, r.a, "lockstream_keys_build_info")
		t.Logf("group a before: %v; after the restart: %v, %.0f requests served by the canary during the fault; %s", old, info, served, es)
		if !strings.Contains(fmt.Sprint(slices.Collect(maps.Keys(info))), `version="disaster-canary"`) {
			t.Fatalf("group a does not report the new build version: %v", info)
		}
		if served == 0 {
			t.Fatal("the canary served no request: traffic did not return to group a")
		}
	})
}
