// Package bqtest is a recording fake of the slice of the BigQuery v2 REST
// API that package bq uses — tables.get/insert/patch/update, jobs.insert
// (also as a multipart media upload) and jobs.get — served on loopback with
// httptest. Tests point the real cloud.google.com/go/bigquery client at it
// (Client does) and then check every request it recorded.
//
// # Behavior
//
// Tables live in memory by "project:dataset.table"; tables.get of a missing
// table answers 404, tables.insert of an existing one 409. jobs.insert
// records the job and asks OnJob for its outcome (default: success, no
// statistics); a load job with CreateIfNeeded creates its table from the
// job's schema. jobs.get answers RUNNING for Outcome.Running polls, then
// DONE with the outcome's error, if any. Anything else answers 501 and is
// recorded, so a test sees an unexpected call.
//
// It is not BigQuery: it runs no SQL and stores no rows.
package bqtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/bigquery"
	bqv2 "google.golang.org/api/bigquery/v2"
	"google.golang.org/api/option"
)

// Request is one recorded API call.
type Request struct {
	Method string
	Path   string // URL path, e.g. /bigquery/v2/projects/p/jobs
	Query  string
	Op     string // tables.get, tables.insert, tables.patch, jobs.insert, jobs.get, or unknown
	Body   []byte // JSON body (for uploads: the metadata part)
	Media  []byte // uploaded data (multipart uploads only)
	Job    *bqv2.Job
	Table  *bqv2.Table
	Status int // status code answered
}

// Outcome is what a job does.
type Outcome struct {
	Error      *bqv2.ErrorProto   // errorResult; nil = success
	Errors     []*bqv2.ErrorProto // the job's error list (errorResult is added if missing)
	OutputRows int64              // load statistics; 0 = no statistics
	Running    int                // jobs.get polls answering RUNNING before DONE
}

// Server is the fake.
type Server struct {
	*httptest.Server
	// OnJob decides each inserted job's outcome; n counts jobs from 0. It
	// may be set before any call.
	OnJob func(n int, job *bqv2.Job) Outcome

	mu     sync.Mutex
	reqs   []Request
	tables map[string]*bqv2.Table
	jobs   map[string]*jobState
	njobs  int
}

type jobState struct {
	job     *bqv2.Job
	outcome Outcome
	polls   int
}

// NewServer starts a server closed at the end of the test.
func NewServer(t testing.TB) *Server {
	s := &Server{tables: map[string]*bqv2.Table{}, jobs: map[string]*jobState{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Client returns a real BigQuery client for project that talks to s.
func (s *Server) Client(ctx context.Context, project string) (*bigquery.Client, error) {
	return bigquery.NewClient(ctx, project,
		option.WithEndpoint(s.URL+"/bigquery/v2/"),
		option.WithoutAuthentication(),
		option.WithHTTPClient(s.Server.Client()))
}

// Requests returns a copy of every request so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Ops returns the Op of every request so far.
func (s *Server) Ops() []string {
	var out []string
	for _, r := range s.Requests() {
		out = append(out, r.Op)
	}
	return out
}

// Jobs returns the inserted jobs, in order.
func (s *Server) Jobs() []*bqv2.Job {
	var out []*bqv2.Job
	for _, r := range s.Requests() {
		if r.Op == "jobs.insert" && r.Job != nil {
			out = append(out, r.Job)
		}
	}
	return out
}

// Table returns a stored table ("project:dataset.table"), or nil.
func (s *Server) Table(id string) *bqv2.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tables[id]
}

// PutTable stores a table as if it existed before the test.
func (s *Server) PutTable(t *bqv2.Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := t.TableReference
	s.tables[r.ProjectId+":"+r.DatasetId+"."+r.TableId] = t
}

// Reset forgets recorded requests (tables and jobs stay).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body, Op: "unknown"}
	status, resp := s.route(r, &rec)
	rec.Status = status
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}

func apiError(code int, reason, msg string) any {
	return map[string]any{"error": map[string]any{"code": code, "message": msg,
		"errors": []map[string]any{{"reason": reason, "message": msg, "domain": "global"}}}}
}

func (s *Server) route(r *http.Request, rec *Request) (int, any) {
	const api, upload = "/bigquery/v2/projects/", "/upload/bigquery/v2/projects/"
	var p []string
	switch {
	case strings.HasPrefix(r.URL.Path, upload):
		p = strings.Split(strings.TrimPrefix(r.URL.Path, upload), "/")
		if len(p) == 2 && p[1] == "jobs" && r.Method == http.MethodPost {
			rec.Op = "jobs.insert"
			meta, media, err := splitMultipart(r.Header.Get("Content-Type"), rec.Body)
			if err != nil {
				return http.StatusBadRequest, apiError(400, "invalid", err.Error())
			}
			rec.Body, rec.Media = meta, media
			return s.insertJob(p[0], rec)
		}
		return http.StatusNotImplemented, apiError(501, "notImplemented", "bqtest: "+r.Method+" "+r.URL.Path)
	case strings.HasPrefix(r.URL.Path, api):
		p = strings.Split(strings.TrimPrefix(r.URL.Path, api), "/")
	default:
		return http.StatusNotImplemented, apiError(501, "notImplemented", "bqtest: "+r.URL.Path)
	}
	switch {
	case len(p) == 2 && p[1] == "jobs" && r.Method == http.MethodPost:
		rec.Op = "jobs.insert"
		return s.insertJob(p[0], rec)
	case len(p) == 3 && p[1] == "jobs" && r.Method == http.MethodGet:
		rec.Op = "jobs.get"
		return s.getJob(p[0], p[2])
	case len(p) == 4 && p[1] == "datasets" && p[3] == "tables" && r.Method == http.MethodPost:
		rec.Op = "tables.insert"
		var t bqv2.Table
		if err := json.Unmarshal(rec.Body, &t); err != nil || t.TableReference == nil {
			return http.StatusBadRequest, apiError(400, "invalid", "bqtest: bad table")
		}
		rec.Table = &t
		id := p[0] + ":" + p[2] + "." + t.TableReference.TableId
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.tables[id] != nil {
			return http.StatusConflict, apiError(409, "duplicate", "Already Exists: Table "+id)
		}
		t.Etag = "etag-1"
		t.Type = "TABLE"
		if t.View != nil {
			t.Type = "VIEW"
		}
		s.tables[id] = &t
		return http.StatusOK, &t
	case len(p) == 5 && p[1] == "datasets" && p[3] == "tables":
		id := p[0] + ":" + p[2] + "." + p[4]
		s.mu.Lock()
		defer s.mu.Unlock()
		t := s.tables[id]
		switch r.Method {
		case http.MethodGet:
			rec.Op = "tables.get"
		case http.MethodPatch, http.MethodPut:
			rec.Op = "tables.patch"
			var u bqv2.Table
			if err := json.Unmarshal(rec.Body, &u); err != nil {
				return http.StatusBadRequest, apiError(400, "invalid", "bqtest: bad table")
			}
			rec.Table = &u
			if t != nil {
				if u.View != nil {
					t.View = u.View
				}
				if u.Description != "" {
					t.Description = u.Description
				}
				if u.Schema != nil {
					t.Schema = u.Schema
				}
				t.Etag += "+"
			}
		default:
			return http.StatusNotImplemented, apiError(501, "notImplemented", "bqtest: "+r.Method+" "+r.URL.Path)
		}
		if t == nil {
			return http.StatusNotFound, apiError(404, "notFound", "Not found: Table "+id)
		}
		return http.StatusOK, t
	}
	return http.StatusNotImplemented, apiError(501, "notImplemented", "bqtest: "+r.Method+" "+r.URL.Path)
}

func splitMultipart(ct string, body []byte) (meta, media []byte, err error) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, nil, fmt.Errorf("bqtest: upload content type %q is not multipart", ct)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, nil, err
		}
		parts = append(parts, b)
	}
	if len(parts) != 2 {
		return nil, nil, fmt.Errorf("bqtest: upload has %d parts, want 2", len(parts))
	}
	return parts[0], parts[1], nil
}

func (s *Server) insertJob(project string, rec *Request) (int, any) {
	var j bqv2.Job
	if err := json.Unmarshal(rec.Body, &j); err != nil {
		return http.StatusBadRequest, apiError(400, "invalid", "bqtest: bad job")
	}
	rec.Job = &j
	if j.JobReference == nil || j.JobReference.JobId == "" {
		return http.StatusBadRequest, apiError(400, "invalid", "bqtest: job without a client-side job id")
	}
	s.mu.Lock()
	n := s.njobs
	s.njobs++
	if s.jobs[j.JobReference.JobId] != nil {
		s.mu.Unlock()
		return http.StatusConflict, apiError(409, "duplicate", "Already Exists: Job "+j.JobReference.JobId)
	}
	onJob := s.OnJob
	s.mu.Unlock()
	var out Outcome
	if onJob != nil {
		out = onJob(n, &j)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.JobReference.ProjectId == "" {
		j.JobReference.ProjectId = project
	}
	if j.JobReference.Location == "" {
		j.JobReference.Location = "US"
	}
	if ld := j.Configuration.Load; ld != nil && out.Error == nil && ld.CreateDisposition != "CREATE_NEVER" && ld.DestinationTable != nil {
		d := ld.DestinationTable
		tid, _, _ := strings.Cut(d.TableId, "$")
		id := d.ProjectId + ":" + d.DatasetId + "." + tid
		if s.tables[id] == nil {
			s.tables[id] = &bqv2.Table{TableReference: &bqv2.TableReference{ProjectId: d.ProjectId, DatasetId: d.DatasetId, TableId: tid}, Schema: ld.Schema, Etag: "etag-1"}
		}
	}
	js := &jobState{job: &j, outcome: out}
	s.jobs[j.JobReference.JobId] = js
	resp := *js.job
	resp.Status = &bqv2.JobStatus{State: "RUNNING"}
	return http.StatusOK, &resp
}

func (s *Server) getJob(project, id string) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[id]
	if js == nil {
		return http.StatusNotFound, apiError(404, "notFound", "Not found: Job "+project+":"+id)
	}
	resp := *js.job
	js.polls++
	if js.polls <= js.outcome.Running {
		resp.Status = &bqv2.JobStatus{State: "RUNNING"}
		return http.StatusOK, &resp
	}
	st := &bqv2.JobStatus{State: "DONE", ErrorResult: js.outcome.Error, Errors: js.outcome.Errors}
	if st.ErrorResult != nil && len(st.Errors) == 0 {
		st.Errors = []*bqv2.ErrorProto{st.ErrorResult}
	}
	resp.Status = st
	resp.Statistics = &bqv2.JobStatistics{}
	if js.outcome.OutputRows > 0 && resp.Configuration.Load != nil {
		resp.Statistics.Load = &bqv2.JobStatistics3{OutputRows: js.outcome.OutputRows}
	}
	return http.StatusOK, &resp
}
