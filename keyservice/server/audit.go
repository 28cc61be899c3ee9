package server

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// AuditRecord is one line of the audit log. It never holds a user id or key
// bytes: admin operations name the keychain by its opaque subject.
type AuditRecord struct {
	Time       time.Time `json:"time"`
	Caller     string    `json:"caller"` // service name; "" when unauthenticated
	Peer       string    `json:"peer,omitempty"`
	Op         string    `json:"op"`
	Scope      string    `json:"scope,omitempty"`
	Categories []string  `json:"categories,omitempty"`
	Count      int       `json:"count,omitempty"`   // ids in the request
	Subject    string    `json:"subject,omitempty"` // admin operations
	Version    int       `json:"version,omitempty"` // rotate: the new version
	Outcome    string    `json:"outcome"`           // "ok", "denied", "error"
	Code       string    `json:"code,omitempty"`    // RPC code when not ok
	Reason     string    `json:"reason,omitempty"`  // PII-free explanation
}

// auditLog writes AuditRecords as JSON lines, one write per line.
type auditLog struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

func (a *auditLog) write(r AuditRecord) {
	r.Time = a.now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	_, _ = a.w.Write(b)
}
