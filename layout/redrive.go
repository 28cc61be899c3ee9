package layout

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// RedriveArea holds the ledger of `lockstream redrive`: which dead letters
// were re-ingested, by which attempt, into which part files.
//
//	<root>/redrive/<reason>/<YYYY-MM-DD>/<HH>/<dead-letter file>.<NNNN>.json
//
// One ledger entry per attempt (NNNN from 0001) and dead-letter file,
// mirroring the dead-letter file's own path.
const RedriveArea = "redrive"

// RedriveLedger is the ledger entry of attempt n (from 1) of the dead-letter
// file deadLetter (its object name, deadletter/<reason>/<day>/<HH>/<file>).
func RedriveLedger(deadLetter string, n int) string {
	rel := strings.TrimPrefix(deadLetter, DeadLetterArea+"/")
	return fmt.Sprintf("%s/%s.%04d.json", RedriveArea, rel, n)
}

// RedriveLedgerDir is the directory of the ledger entries of the dead
// letters of one reason and hour.
func RedriveLedgerDir(reason string, hour time.Time) string {
	return RedriveArea + "/" + reason + "/" + hourPath(hour) + "/"
}

// ParseRedriveLedger reads a ledger entry's name back: the dead-letter
// file it is about, and the attempt.
func ParseRedriveLedger(name string) (deadLetter string, n int, ok bool) {
	rel, found := strings.CutPrefix(name, RedriveArea+"/")
	if !found {
		return "", 0, false
	}
	rel, found = strings.CutSuffix(rel, ".json")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rel, '.')
	if i < 0 || len(rel)-i-1 != 4 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rel[i+1:])
	if err != nil || n < 1 {
		return "", 0, false
	}
	deadLetter = DeadLetterArea + "/" + rel[:i]
	if strings.Count(deadLetter, "/") != 4 || path.Clean(deadLetter) != deadLetter {
		return "", 0, false
	}
	return deadLetter, n, true
}

// RedriveDoc is one ledger entry (RedriveLedger): written before the part
// files it names, so that an attempt that died in between is finished by
// the next redrive, never redone with other messages.
type RedriveDoc struct {
	DeadLetter string    `json:"dead_letter"` // the dead-letter file
	Reason     string    `json:"reason"`
	Attempt    int       `json:"attempt"`
	RunID      string    `json:"run_id"`
	At         time.Time `json:"at"`
	// Messages are the dead letters this attempt re-ingests.
	Messages []RedriveMessage `json:"messages"`
	// Files are the part files (raw or late, root-relative) that hold
	// them: one per type and version.
	Files []string `json:"files"`
}

// RedriveMessage is one re-ingested dead letter: its message id, the
// contract attributes it was dead-lettered with, and the schema it passes
// now.
type RedriveMessage struct {
	ID            string `json:"id"`
	EventType     string `json:"event_type"`
	SchemaVersion string `json:"schema_version"`
	Type          string `json:"type"`
	Version       int    `json:"version"`
}
