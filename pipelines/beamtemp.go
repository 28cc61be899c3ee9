package pipelines

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Beam's universal runner (what prism runs behind) makes an empty file
// named beamloopbackworker-* in the temporary directory for every job in
// loopback mode, stages it as the job's worker binary, and never removes
// it (Beam v2.77, runnerlib.Execute). A scheduler running lockstream every
// hour would fill /tmp with them; the test suite leaves ~2,000.

// loopbackPrefix is the name Beam gives those files.
const loopbackPrefix = "beamloopbackworker-"

// loopbackGrace is how old a loopback file must be before it is removed:
// a job reads its file only while it is submitted (milliseconds after
// making it on a local prism, at most the job service's 2-minute dial
// timeout otherwise), so a file this old is read by no job, this
// process's or another's.
const loopbackGrace = 10 * time.Minute

// sweepLoopbackFiles removes the empty loopback files in dir last modified
// before cutoff, and returns how many it removed. It never fails a job:
// a file it cannot read or remove is left.
func sweepLoopbackFiles(dir string, cutoff time.Time) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), loopbackPrefix) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 || !fi.ModTime().Before(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(dir, e.Name())) == nil {
			n++
		}
	}
	return n
}
