package status

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/lockstream/lockstream/status/statustest"
)

// chromium finds a Chromium or Chrome binary: $LOCKSTREAM_CHROMIUM, or
// Debian's chromium (.ci/run installs it). Without one the test
// fails (LOCKSTREAM_SKIP_TOOLS=1 skips it).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LOCKSTREAM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("LOCKSTREAM_SKIP_TOOLS") != "" {
		t.Skip("no chromium (LOCKSTREAM_SKIP_TOOLS is set)")
	}
	t.Fatal("no chromium on this machine: .ci/run installs Debian's chromium package; LOCKSTREAM_SKIP_TOOLS=1 skips this test")
	return ""
}

// TestStatusPageInBrowser loads the HTML page of the fixture root in
// headless Chromium: every hour cell has the state the root says, a click
// shows that hour's accounting, the page fetches nothing and logs no
// console error. The screenshot is saved in the test's temp dir (and
// copied to $LOCKSTREAM_STATUS_SCREENSHOT when set).
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	_, b := fixture(t)
	r := build(t, b, Options{StuckAfter: 10 * time.Minute}) // 06 waits past 07:12: stuck at 07:30
	dir := t.TempDir()
	page := filepath.Join(dir, "status.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(f, r, HTMLOptions{Root: "/data/lockstream"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(filepath.Join(dir, "profile")), chromedp.WindowSize(1400, 900),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	pageURL := (&url.URL{Scheme: "file", Path: page}).String()
	var mu sync.Mutex
	var problems []string
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, "console."+string(e.Type)+": "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Error())
		case *log.EventEntryAdded:
			if e.Entry.Level == log.LevelError {
				problems = append(problems, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		case *network.EventRequestWillBeSent:
			if u := e.Request.URL; u != pageURL && !strings.HasPrefix(u, "data:") {
				problems = append(problems, "fetched "+u)
			}
		}
	})

	type cellState struct{ Type, Version, Hour, State string }
	var cells []cellState
	var attention, details, title string
	var shot []byte
	if err := chromedp.Run(ctx,
		network.Enable(), log.Enable(), runtime.Enable(),
		chromedp.Navigate(pageURL),
		chromedp.WaitVisible("#grid", chromedp.ByID),
		chromedp.Title(&title),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("td.cell")).map(c => ({Type: c.dataset.type, Version: c.dataset.version, Hour: c.dataset.hour, State: c.dataset.state}))`, &cells),
		chromedp.Text("#attention", &attention, chromedp.ByID),
		chromedp.Click(`td.cell[data-type="PlaybackEvent"][data-version="1"][data-hour="2026-11-23T04"]`, chromedp.ByQuery),
		chromedp.Text("#details", &details, chromedp.ByID),
		chromedp.FullScreenshot(&shot, 100), // quality 100: a PNG
	); err != nil {
		t.Fatal(err)
	}
	// A link to one hour opens the page with that hour's details shown.
	var linked string
	if err := chromedp.Run(ctx,
		chromedp.Navigate("about:blank"),
		chromedp.Navigate(pageURL+"#PlaybackEvent/v1/2026-11-23T05"),
		chromedp.WaitVisible("td.cell.selected", chromedp.ByQuery),
		chromedp.Text("#details", &linked, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	linked = strings.Join(strings.Fields(linked), " ")
	for _, w := range []string{"PlaybackEvent v1 2026-11-23T05", "complete, not published", "missing_field 2 (1 redriven), unknown_field 1", "in 3 dead letters"} {
		if !strings.Contains(linked, w) {
			t.Errorf("the linked hour's details lack %q:\n%s", w, linked)
		}
	}
	png := filepath.Join(dir, "status.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", png, len(shot))
	if p := os.Getenv("LOCKSTREAM_STATUS_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The cells against the root statustest built: 4 hours (04..07) per
	// row, rows by type, version; the (unknown) row last.
	want := map[string]string{
		"AccountUpdate|1|2026-11-23T04": StatePublished,
		"AccountUpdate|1|2026-11-23T05": StateComplete,
		"PlaybackEvent|1|2026-11-23T04": StateSupplemented,
		"PlaybackEvent|1|2026-11-23T05": StateComplete,
		"PlaybackEvent|1|2026-11-23T06": StateStuck,
		"(unknown)|0|2026-11-23T05":     StateDeadLetters,
	}
	got := map[string]string{}
	rows := map[string]bool{}
	for _, c := range cells {
		rows[c.Type+"|"+c.Version] = true
		if c.State != "none" {
			got[c.Type+"|"+c.Version+"|"+c.Hour] = c.State
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cells with data:\n got %v\nwant %v", got, want)
	}
	if len(cells) != 4*len(rows) || len(rows) != 3 {
		t.Errorf("%d cells in %d rows, want 4 hours in each of 3 rows", len(cells), len(rows))
	}
	if !strings.HasPrefix(title, "lockstream status") {
		t.Errorf("title %q", title)
	}
	for _, w := range []string{"PlaybackEvent v1 2026-11-23T06 is stuck", "2 dead letter(s) missing_field in 2 hour(s), not redriven", "writer " + statustest.StaleWriter + " is stale", "proj.staging (1/2 parts)"} {
		if !strings.Contains(attention, w) {
			t.Errorf("attention lacks %q:\n%s", w, attention)
		}
	}
	// The clicked hour's accounting: 12 records in 2 parts, each read one
	// duplicate more than it published (statustest), loads, lineage.
	details = strings.Join(strings.Fields(details), " ")
	for _, w := range []string{"PlaybackEvent v1 2026-11-23T04", "published with supplements", "in 14 ", "published 12 records",
		"duplicates dropped 2 in the hour", "supplements 1 ", "late parts pending 1 ", "proj.events (every part), proj.staging (1 of 2 parts)",
		"main 10, late-0001 2", "2026-11-23T04, 2026-11-23T03", "run-h1 (code test)"} {
		if !strings.Contains(details, w) {
			t.Errorf("details lack %q:\n%s", w, details)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Errorf("the page logged errors or fetched something:\n%s", strings.Join(problems, "\n"))
	}
}
