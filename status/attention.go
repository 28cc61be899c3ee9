package status

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// attention lists what needs an operator in r, most urgent first: stuck
// hours, complete hours not published past their deadline, late parts
// pending in published hours, BigQuery loads that miss a part, dead
// letters not redriven (one line per reason), stale writers.
func attention(r *Report) []string {
	out := []string{}
	dead := map[string]int64{}
	deadHours := map[string]int{}
	var lines [4][]string
	for i := range r.Hours {
		h := &r.Hours[i]
		name := h.Type + " v" + fmt.Sprint(h.Version) + " " + h.Hour
		for reason, n := range h.DeadLettered {
			if left := n - h.Redriven[reason]; left > 0 {
				dead[reason] += left
				deadHours[reason]++
			}
		}
		if h.Type == UnknownType {
			continue
		}
		late := r.Now.Sub(h.Deadline).Round(time.Minute)
		switch {
		case h.State == StateStuck:
			lines[0] = append(lines[0], fmt.Sprintf("%s is stuck: not complete %s past its deadline (%s)", name, late, h.Waiting))
		case h.State == StateComplete && late >= 0:
			lines[1] = append(lines[1], fmt.Sprintf("%s is complete but not published, %s past its deadline (run hourly for it)", name, late))
		}
		if h.Published && h.LatePending > 0 {
			lines[2] = append(lines[2], fmt.Sprintf("%s has %d late part file(s) no supplement holds yet (hourly publishes them)", name, h.LatePending))
		}
		if cell := bigQueryCell(*h); strings.Contains(cell, " parts)") {
			lines[3] = append(lines[3], fmt.Sprintf("%s: BigQuery %s (a later supplement is not loaded)", name, cell))
		}
	}
	for _, l := range lines {
		out = append(out, l...)
	}
	for _, reason := range slices.Sorted(maps.Keys(dead)) {
		out = append(out, fmt.Sprintf("%d dead letter(s) %s in %d hour(s), not redriven (lockstream redrive --reason %s)", dead[reason], reason, deadHours[reason], reason))
	}
	for _, w := range r.Writers {
		if w.Stale {
			out = append(out, fmt.Sprintf("writer %s is stale: state running, last heartbeat %s ago (crashed? it holds no hour)", w.ID, w.HeartbeatAge))
		}
	}
	return out
}
