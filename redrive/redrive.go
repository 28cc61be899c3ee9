package redrive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/rootid"
	"github.com/lockstream/lockstream/schemas"
)

// Config says what to redrive.
type Config struct {
	Bucket blob.Bucket
	// Reason is the dead-letter reason to redrive (one per run).
	Reason string
	// Since and Until bound the dead letters' hours: [Since, Until); zero
	// means unbounded.
	Since, Until time.Time
	// Keys must be allowed to decrypt the "payload" category and to
	// encrypt every category of the types re-ingested (the ingest scope).
	Keys keyclient.Keys
	// Registry is today's schemas (nil: schemas.Embedded()).
	Registry   *schemas.Registry
	MaxPayload int // bytes; 0 = record.DefaultMaxPayload
	// RunID names this run (writer record, ledger entries; "" = from the
	// clock and random bytes).
	RunID string
	Now   func() time.Time // nil: time.Now
}

// Result is what a run did.
type Result struct {
	RunID string
	// Files is the number of dead-letter files read; Messages their dead
	// letters.
	Files    int
	Messages int64
	// Redriven were re-ingested by this run; Already by an earlier one.
	Redriven, Already int64
	// Shredded: sealed under a key that is gone (user deleted, category
	// revoked, dead-letter keychain shredded): unreadable, they stay.
	Shredded int64
	// NotSealed: nothing was sealed to redrive (user_deleted,
	// key_unavailable, oversized): they stay.
	NotSealed int64
	// Failing: still rejected today, by the reason they fail with now.
	Failing map[string]int64
	// Written are the part files written (root-relative); Hours their
	// (type, version, hour)s.
	Written []string
	Hours   []layout.Hour
	// Completed are the hours this run marked complete.
	Completed []layout.Hour
}

// Left is the number of dead letters that stay (every count but the
// redriven ones).
func (r *Result) Left() int64 {
	n := r.Shredded + r.NotSealed
	for _, c := range r.Failing {
		n += c
	}
	return n
}

// ErrConfig is wrapped by configuration errors.
var ErrConfig = errors.New("redrive: bad configuration")

// Run redrives the dead letters cfg selects.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Bucket == nil || cfg.Keys == nil {
		return nil, fmt.Errorf("%w: a root and a key source are required", ErrConfig)
	}
	if cfg.Reason == "" || strings.ContainsAny(cfg.Reason, "/ ") {
		return nil, fmt.Errorf("%w: reason %q", ErrConfig, cfg.Reason)
	}
	if !cfg.Since.IsZero() && !cfg.Until.IsZero() && !cfg.Since.Before(cfg.Until) {
		return nil, fmt.Errorf("%w: since %s is not before until %s", ErrConfig, layout.FormatHour(cfg.Since), layout.FormatHour(cfg.Until))
	}
	if cfg.Registry == nil {
		reg, err := schemas.Embedded()
		if err != nil {
			return nil, err
		}
		cfg.Registry = reg
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RunID == "" {
		cfg.RunID = "redrive_" + cfg.Now().UTC().Format("20060102T150405") + "_" + shortHash(fmt.Sprint(cfg.Now().UnixNano(), os.Getpid()))
	}
	b := cfg.Bucket
	scope, err := rootid.Get(ctx, b)
	if err != nil {
		return nil, err
	}
	anon, err := record.NewAnonymizer(cfg.Registry, cfg.Keys, record.Options{MaxPayload: cfg.MaxPayload, DeadLetterScope: scope})
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, b: b, anon: anon, res: &Result{RunID: cfg.RunID, Failing: map[string]int64{}}}

	names, err := b.List(ctx, layout.DeadLetterArea+"/"+cfg.Reason+"/")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, n := range names {
		if h, ok := deadLetterHour(n, cfg.Reason); ok && (cfg.Since.IsZero() || !h.Before(cfg.Since)) && (cfg.Until.IsZero() || h.Before(cfg.Until)) {
			files = append(files, n)
		}
	}
	if len(files) == 0 {
		return r.res, nil
	}
	// Every ledger entry: a message is redriven once whatever file or
	// reason it was dead-lettered under (a redelivered message may be in
	// two files).
	ledgers, err := b.List(ctx, layout.RedriveArea+"/")
	if err != nil {
		return nil, err
	}
	r.entries = map[string][]*layout.RedriveDoc{}
	r.done = map[string]bool{}
	for _, n := range ledgers {
		dl, _, ok := layout.ParseRedriveLedger(n)
		if !ok {
			continue
		}
		data, err := blob.ReadAll(ctx, b, n)
		if err != nil {
			return nil, err
		}
		var doc layout.RedriveDoc
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("redrive: %s: %w", n, err)
		}
		r.entries[dl] = append(r.entries[dl], &doc)
		for _, m := range doc.Messages {
			r.done[m.ID] = true
		}
	}

	if err := completion.Claim(ctx, b, completion.RunInfo{RunID: cfg.RunID, Source: "redrive " + cfg.Reason, StartedAt: cfg.Now()}); err != nil {
		return nil, err
	}
	r.rec = &completion.Record{RunID: cfg.RunID, Part: "redrive", Kind: completion.KindBounded, Source: "redrive " + cfg.Reason,
		State: completion.StateRunning, StaleAfter: completion.Duration(completion.DefaultStaleAfter), StartedAt: cfg.Now(), HeartbeatAt: cfg.Now()}
	if err := completion.Write(ctx, b, r.rec); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := r.file(ctx, f); err != nil {
			r.end(ctx, completion.StateFailed, err.Error())
			return r.res, err
		}
	}
	if err := r.end(ctx, completion.StateFinished, fmt.Sprintf("redrove %d dead letters (%s)", r.res.Redriven, cfg.Reason)); err != nil {
		return r.res, err
	}
	// The hours written may be complete now (an hour only this run wrote
	// is, once it finished): mark them as any writer does.
	if len(r.res.Hours) > 0 {
		open, err := completion.Open(ctx, b)
		if err != nil {
			return r.res, err
		}
		o := &completion.Observer{Bucket: b, Name: cfg.RunID, Now: cfg.Now}
		ds, err := o.Observe(ctx, open)
		if err != nil {
			return r.res, err
		}
		for _, d := range ds {
			if d.Complete && slices.Contains(r.res.Hours, d.Hour) {
				r.res.Completed = append(r.res.Completed, d.Hour)
			}
		}
	}
	return r.res, nil
}

type runner struct {
	cfg     Config
	b       blob.Bucket
	anon    *record.Anonymizer
	res     *Result
	rec     *completion.Record
	marks   completion.HourMarks
	entries map[string][]*layout.RedriveDoc // by dead-letter file
	done    map[string]bool                 // message ids redriven
}

func (r *runner) end(ctx context.Context, state, note string) error {
	r.rec.State, r.rec.Note, r.rec.HeartbeatAt = state, note, r.cfg.Now()
	return completion.Write(context.WithoutCancel(ctx), r.b, r.rec)
}

// beat refreshes the run's heartbeat when it is getting old.
func (r *runner) beat(ctx context.Context) error {
	if r.cfg.Now().Sub(r.rec.HeartbeatAt) < 10*time.Second {
		return nil
	}
	r.rec.HeartbeatAt = r.cfg.Now()
	return completion.Write(ctx, r.b, r.rec)
}

// file redrives one dead-letter file.
func (r *runner) file(ctx context.Context, name string) error {
	if err := r.beat(ctx); err != nil {
		return err
	}
	data, err := blob.ReadAll(ctx, r.b, name)
	if errors.Is(err, blob.ErrNotExist) {
		return nil // removed by retention meanwhile
	}
	if err != nil {
		return err
	}
	r.res.Files++
	var rejs []record.Rejection
	for line := range bytes.Lines(data) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rj record.Rejection
		if err := json.Unmarshal(line, &rj); err != nil || rj.MessageID == "" {
			r.res.Messages++
			r.res.NotSealed++ // not a dead-letter record: nothing to read back
			continue
		}
		rejs = append(rejs, rj)
	}
	r.res.Messages += int64(len(rejs))
	byID := map[string]*record.Rejection{}
	for i := range rejs {
		byID[rejs[i].MessageID] = &rejs[i]
	}

	// Finish earlier attempts whose part files are missing.
	entries := r.entries[name]
	sort.Slice(entries, func(i, j int) bool { return entries[i].Attempt < entries[j].Attempt })
	for _, e := range entries {
		if err := r.finish(ctx, name, e, byID); err != nil {
			return err
		}
	}

	// This attempt: the dead letters no ledger lists.
	var todo []*record.Rejection
	seen := map[string]bool{}
	for i := range rejs {
		rj := &rejs[i]
		switch {
		case r.done[rj.MessageID]:
			r.res.Already++
		case seen[rj.MessageID]:
			r.res.Already++ // the same message twice in one file
		default:
			seen[rj.MessageID] = true
			todo = append(todo, rj)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	msgs, kept := r.unseal(ctx, todo)
	if len(msgs) == 0 {
		return nil
	}
	outs, err := r.anon.Anonymize(ctx, msgs)
	if err != nil {
		return fmt.Errorf("redrive: %s: %w", name, err)
	}
	attempt := 1
	for _, e := range entries {
		attempt = max(attempt, e.Attempt+1)
	}
	doc := &layout.RedriveDoc{DeadLetter: name, Reason: r.cfg.Reason, Attempt: attempt, RunID: r.cfg.RunID, At: r.cfg.Now().UTC()}
	groups := map[layout.Hour]*group{}
	var order []layout.Hour
	for i, o := range outs {
		if o.Reject != nil {
			r.res.Failing[o.Reject.Reason]++
			continue
		}
		h := layout.Hour{Type: o.EventType, Version: o.Version, Hour: o.Hour.UTC()}
		g := groups[h]
		if g == nil {
			g = &group{}
			groups[h] = g
			order = append(order, h)
		}
		g.recs = append(g.recs, o.Record)
		rj := kept[i]
		doc.Messages = append(doc.Messages, layout.RedriveMessage{ID: rj.MessageID, EventType: rj.Attributes[record.AttrEventType],
			SchemaVersion: rj.Attributes[record.AttrSchemaVersion], Type: o.EventType, Version: o.Version})
	}
	if len(order) == 0 {
		return nil
	}
	for _, h := range order {
		complete, err := r.b.Exists(ctx, layout.CompleteName(h.Type, h.Version, h.Hour))
		if err != nil {
			return err
		}
		groups[h].name = partName(h, name, attempt, complete)
		doc.Files = append(doc.Files, groups[h].name)
	}
	// The ledger entry first: a crash after it leaves an attempt the next
	// redrive finishes with the same messages and names.
	ledger, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := blob.WriteAll(ctx, r.b, layout.RedriveLedger(name, attempt), append(ledger, '\n')); err != nil {
		if errors.Is(err, blob.ErrExist) {
			return fmt.Errorf("redrive: %s: attempt %d was taken by another redrive running now", name, attempt)
		}
		return err
	}
	for _, h := range order {
		if err := r.write(ctx, h, groups[h]); err != nil {
			return err
		}
	}
	for _, m := range doc.Messages {
		r.done[m.ID] = true
	}
	r.res.Redriven += int64(len(doc.Messages))
	return nil
}

type group struct {
	name string
	recs [][]byte
}

// finish writes the part files of an earlier attempt that are missing
// (that redrive died after its ledger entry), from the same messages.
func (r *runner) finish(ctx context.Context, name string, e *layout.RedriveDoc, byID map[string]*record.Rejection) error {
	var missing []string
	for _, f := range e.Files {
		ok, err := r.b.Exists(ctx, f)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var todo []*record.Rejection
	for _, m := range e.Messages {
		if rj := byID[m.ID]; rj != nil {
			todo = append(todo, rj)
		}
	}
	msgs, _ := r.unseal(ctx, todo)
	outs, err := r.anon.Anonymize(ctx, msgs)
	if err != nil {
		return fmt.Errorf("redrive: %s: %w", name, err)
	}
	groups := map[string]*group{}
	for _, o := range outs {
		if o.Reject != nil {
			return fmt.Errorf("redrive: %s: attempt %d cannot be finished: a message it re-ingests fails now (%s)", name, e.Attempt, o.Reject.Reason)
		}
		h := layout.Hour{Type: o.EventType, Version: o.Version, Hour: o.Hour.UTC()}
		for _, f := range missing {
			if strings.HasPrefix(f, layout.RawDir(h.Type, h.Version, h.Hour)) || strings.HasPrefix(f, layout.LateDir(h.Type, h.Version, h.Hour)) {
				if groups[f] == nil {
					groups[f] = &group{name: f}
				}
				groups[f].recs = append(groups[f].recs, o.Record)
			}
		}
	}
	for _, f := range missing {
		g := groups[f]
		if g == nil {
			return fmt.Errorf("redrive: %s: attempt %d cannot be finished: no message for %s", name, e.Attempt, f)
		}
		_, h, _, ok := layout.ParseDir(f)
		if !ok {
			return fmt.Errorf("redrive: %s: attempt %d names %s, not a part file", name, e.Attempt, f)
		}
		if err := r.write(ctx, h, g); err != nil {
			return err
		}
	}
	return nil
}

// write writes one part file (an existing one is an earlier attempt's:
// its name says which messages it holds).
func (r *runner) write(ctx context.Context, h layout.Hour, g *group) error {
	s, err := r.cfg.Registry.Lookup(h.Type, h.Version)
	if err != nil {
		return err
	}
	if strings.HasPrefix(g.name, layout.RawDir(h.Type, h.Version, h.Hour)) {
		if err := r.marks.Mark(ctx, r.b, r.cfg.RunID, h); err != nil {
			return err
		}
	}
	w, err := r.b.Create(ctx, g.name)
	if errors.Is(err, blob.ErrExist) {
		r.written(h, g.name)
		return nil
	}
	if err != nil {
		return err
	}
	ocf, err := record.NewOCFWriter(w, s.Encrypted().JSON, record.SyncMarker(g.name), record.CodecSnappy)
	if err != nil {
		w.Abort()
		return err
	}
	for _, rec := range g.recs {
		if err := ocf.Append(rec); err != nil {
			w.Abort()
			return err
		}
	}
	if err := ocf.Close(); err != nil {
		w.Abort()
		return err
	}
	if err := w.Close(); err != nil && !errors.Is(err, blob.ErrExist) {
		return err
	}
	r.written(h, g.name)
	return nil
}

func (r *runner) written(h layout.Hour, name string) {
	r.res.Written = append(r.res.Written, name)
	if !slices.Contains(r.res.Hours, h) {
		r.res.Hours = append(r.res.Hours, h)
	}
}

// unseal reads back the messages of rejections: those whose payload is
// sealed under a key that exists. It counts the others (shredded, not
// sealed); kept[i] is the rejection of msgs[i].
func (r *runner) unseal(ctx context.Context, rejs []*record.Rejection) (msgs []record.Message, kept []*record.Rejection) {
	var subjects []string
	for _, rj := range rejs {
		if len(rj.PayloadCiphertext) > 0 && rj.Subject != "" && !slices.Contains(subjects, rj.Subject) {
			subjects = append(subjects, rj.Subject)
		}
	}
	keys := map[string]*keyclient.UserKeys{}
	if len(subjects) > 0 {
		uks, err := r.cfg.Keys.ForDecrypt(ctx, subjects, []string{record.PayloadCategory})
		if err == nil && len(uks) == len(subjects) {
			for i := range uks {
				keys[subjects[i]] = &uks[i]
			}
		}
	}
	for _, rj := range rejs {
		if len(rj.PayloadCiphertext) == 0 || rj.Subject == "" {
			r.res.NotSealed++
			continue
		}
		uk := keys[rj.Subject]
		payload, err := open(uk, rj.PayloadCiphertext, rj.PayloadAAD, "_deadletter."+rj.MessageID+"|"+rj.Subject)
		if err != nil {
			r.res.Shredded++
			continue
		}
		attrs := map[string]string{}
		for k, v := range rj.Attributes {
			attrs[k] = v
		}
		if len(rj.AttributesCiphertext) > 0 {
			pt, err := open(uk, rj.AttributesCiphertext, rj.AttributesAAD, "_deadletter_attributes."+rj.MessageID+"|"+rj.Subject)
			if err != nil {
				r.res.Shredded++
				continue
			}
			var other map[string]string
			if err := json.Unmarshal(pt, &other); err != nil {
				r.res.Shredded++
				continue
			}
			for k, v := range other {
				if _, contract := attrs[k]; !contract {
					attrs[k] = v
				}
			}
		}
		msgs = append(msgs, record.Message{ID: rj.MessageID, PublishTime: rj.PublishTime.UTC(), Attributes: attrs, Data: payload})
		kept = append(kept, rj)
	}
	return msgs, kept
}

// errGone: the key that sealed a dead letter is gone, or its ciphertext
// does not open.
var errGone = errors.New("redrive: sealed under a key that is gone")

// open decrypts a sealed part of a dead letter with the version of the
// "payload" key its ciphertext names. The AAD must be the one the format
// fixes for its message id and subject (a record moved between lines, or
// edited, does not open).
func open(uk *keyclient.UserKeys, ct []byte, aad, want string) ([]byte, error) {
	if uk == nil || uk.Err != nil || aad != want {
		return nil, errGone
	}
	v, err := fieldcrypt.VersionOf(ct)
	if err != nil {
		return nil, errGone
	}
	for _, k := range uk.Keys {
		if k.Category != record.PayloadCategory || k.Version != v {
			continue
		}
		c, err := fieldcrypt.NewCipher(k)
		if err != nil {
			return nil, err
		}
		pt, err := c.Decrypt(ct, []byte(aad), false)
		if err != nil {
			return nil, errGone
		}
		return pt, nil
	}
	return nil, errGone
}

// partName is the part file of one attempt on a dead-letter file for one
// (type, version, hour): in late/ when the hour is complete.
func partName(h layout.Hour, deadLetter string, attempt int, complete bool) string {
	dir := layout.RawDir(h.Type, h.Version, h.Hour)
	if complete {
		dir = layout.LateDir(h.Type, h.Version, h.Hour)
	}
	return fmt.Sprintf("%spart-redrive-%s-%04d.avro", dir, shortHash(deadLetter), attempt)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// deadLetterHour reads deadletter/<reason>/<YYYY-MM-DD>/<HH>/<file>.
func deadLetterHour(name, reason string) (time.Time, bool) {
	p := strings.Split(name, "/")
	if len(p) != 5 || p[0] != layout.DeadLetterArea || p[1] != reason || p[4] == "" {
		return time.Time{}, false
	}
	h, err := time.Parse("2006-01-02/15", p[2]+"/"+p[3])
	return h, err == nil
}

// Summary is the run's result in a few lines.
func (r *Result) Summary(reason string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "redrive %s (run %s): %d dead letters in %d files: %d re-ingested now, %d by an earlier redrive; %d stay\n",
		reason, r.RunID, r.Messages, r.Files, r.Redriven, r.Already, r.Left())
	if r.Shredded > 0 {
		fmt.Fprintf(&b, "  %d shredded: sealed under a key that is gone (user deleted or category revoked); unreadable by anyone, they stay\n", r.Shredded)
	}
	if r.NotSealed > 0 {
		fmt.Fprintf(&b, "  %d not sealed: nothing was kept to redrive (user_deleted, key_unavailable, oversized)\n", r.NotSealed)
	}
	reasons := make([]string, 0, len(r.Failing))
	for k := range r.Failing {
		reasons = append(reasons, k)
	}
	slices.Sort(reasons)
	for _, k := range reasons {
		fmt.Fprintf(&b, "  %d still fail today: %s\n", r.Failing[k], k)
	}
	if len(r.Written) > 0 {
		fmt.Fprintf(&b, "  wrote %d part files in %d hours; hourly publishes them (a supplement for an hour published already)\n", len(r.Written), len(r.Hours))
	}
	for _, h := range r.Completed {
		fmt.Fprintf(&b, "  marked %s complete\n", h)
	}
	return strings.TrimRight(b.String(), "\n")
}
