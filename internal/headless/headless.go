// Package headless drives headless Chromium (Debian's chromium package) for the tests of the
// status page: DumpDOM loads a page, lets its scripts run for a while of virtual time and returns
// the DOM as it then is, which Parse reads just enough to find elements by their attributes and
// read their text; Screenshot takes a picture after a wait in real time. Each call starts one
// Chromium process, with a profile of its own, and has it ended before it returns.
package headless

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Find returns the path of Chromium, or an error saying how to install it.
func Find() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found: `make test` installs it (scripts/ensure-postgres.sh --chromium), or apt-get install chromium")
}

// Require returns the path of Chromium. Without it the test fails, except under -short, where
// it is skipped: a full run must not pass without having looked at the page.
func Require(t testing.TB) string {
	t.Helper()
	p, err := Find()
	if err != nil {
		if testing.Short() {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	return p
}

// browser returns the command that runs Chromium headless with a fresh profile in dir and args.
func browser(ctx context.Context, chromium, dir string, args ...string) *exec.Cmd {
	args = append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
		"--user-data-dir=" + filepath.Join(dir, "profile")}, args...)
	cmd := exec.CommandContext(ctx, chromium, args...)
	// Chromium writes its caches and crash reports under HOME: keep them in dir.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs Chromium headless with args and returns its standard output.
func run(ctx context.Context, chromium, dir string, args ...string) ([]byte, error) {
	cmd := browser(ctx, chromium, dir, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w\n%s", chromium, err, lastLines(stderr.String(), 20))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// DumpDOM loads url, lets the page run for budget of virtual time (Chromium pauses virtual time
// while fetches are pending, so a page that fetches at load has its answer by then), and returns
// the DOM serialized as HTML. dir is a scratch directory for the browser profile.
func DumpDOM(ctx context.Context, chromium, dir, url string, budget time.Duration) (string, error) {
	out, err := run(ctx, chromium, dir, fmt.Sprintf("--virtual-time-budget=%d", budget.Milliseconds()), "--dump-dom", url)
	return string(out), err
}

// Screenshot loads url in a window of width × height CSS pixels, lets it run for wait of real
// time, and writes a PNG of the window to png. Unlike DumpDOM it waits in real time, so that a
// page showing rates between two of its fetches has them: it drives Chromium through the DevTools
// protocol on a pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte, on file
// descriptors 3 and 4).
func Screenshot(ctx context.Context, chromium, dir, url, png string, width, height int, wait time.Duration) error {
	toBrowser, cmdIn, err := os.Pipe()
	if err != nil {
		return err
	}
	cmdOut, fromBrowser, err := os.Pipe()
	if err != nil {
		toBrowser.Close()
		cmdIn.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := browser(ctx, chromium, dir, "--remote-debugging-pipe", fmt.Sprintf("--window-size=%d,%d", width, height), url)
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Start()
	toBrowser.Close()
	fromBrowser.Close()
	if err != nil {
		cmdIn.Close()
		cmdOut.Close()
		return err
	}
	defer func() {
		cmdIn.Close() // Chromium exits when its pipe closes
		cmdOut.Close()
		cmd.Wait()
	}()
	dt := &devtools{w: cmdIn, r: bufio.NewReader(cmdOut)}
	var page string
	for page == "" {
		var targets struct {
			TargetInfos []struct{ TargetID, Type, URL string } `json:"targetInfos"`
		}
		if err := dt.call("", "Target.getTargets", nil, &targets); err != nil {
			return fmt.Errorf("%w\n%s", err, lastLines(stderr.String(), 20))
		}
		for _, ti := range targets.TargetInfos {
			if ti.Type == "page" {
				page = ti.TargetID
			}
		}
		if page == "" {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	var attached struct{ SessionID string }
	if err := dt.call("", "Target.attachToTarget", map[string]any{"targetId": page, "flatten": true}, &attached); err != nil {
		return err
	}
	if err := dt.call(attached.SessionID, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		return err
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return ctx.Err()
	}
	var shot struct{ Data []byte }
	if err := dt.call(attached.SessionID, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		return err
	}
	return os.WriteFile(png, shot.Data, 0o644)
}

// devtools is one DevTools protocol connection; calls are made one at a time.
type devtools struct {
	w      io.Writer
	r      *bufio.Reader
	nextID int
}

// call sends method with params (to the page of session, or to the browser when "") and decodes
// the result of its answer into result (if not nil), skipping events in between.
func (d *devtools) call(session, method string, params, result any) error {
	d.nextID++
	m := map[string]any{"id": d.nextID, "method": method, "params": params}
	if session != "" {
		m["sessionId"] = session
	}
	msg, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := d.w.Write(append(msg, 0)); err != nil {
		return fmt.Errorf("devtools %s: %w", method, err)
	}
	for {
		line, err := d.r.ReadBytes(0)
		if err != nil {
			return fmt.Errorf("devtools %s: %w", method, err)
		}
		var answer struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if err := json.Unmarshal(line[:len(line)-1], &answer); err != nil {
			return fmt.Errorf("devtools %s: %w", method, err)
		}
		if answer.ID != d.nextID {
			continue // an event
		}
		if answer.Error != nil {
			return fmt.Errorf("devtools %s: %s", method, answer.Error.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(answer.Result, result)
	}
}

// Element is one start tag of a DOM.
type Element struct {
	Tag   string
	Attrs map[string]string // unescaped values
	start int               // offset of the tag in the DOM
}

// DOM is a serialized DOM (Chromium's --dump-dom) with its start tags.
type DOM struct {
	HTML     string
	Elements []Element
}

var (
	tagRE  = regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^\s=>/]+(?:="[^"]*")?)*)\s*/?>`)
	attrRE = regexp.MustCompile(`([^\s=]+)(?:="([^"]*)")?`)
	anyTag = regexp.MustCompile(`<[^>]*>`)
)

// Parse reads the start tags of doc. It relies on how Chromium serializes a DOM (attribute values
// in double quotes, with '"' escaped, '<' and '>' nowhere but in tags); it is no general HTML
// parser.
func Parse(doc string) *DOM {
	d := &DOM{HTML: doc}
	for _, m := range tagRE.FindAllStringSubmatchIndex(doc, -1) {
		e := Element{Tag: strings.ToLower(doc[m[2]:m[3]]), Attrs: map[string]string{}, start: m[0]}
		for _, a := range attrRE.FindAllStringSubmatch(doc[m[4]:m[5]], -1) {
			e.Attrs[a[1]] = html.UnescapeString(a[2])
		}
		d.Elements = append(d.Elements, e)
	}
	return d
}

// Find returns the elements that have every attribute of want (name, value pairs; a value of
// "*" matches any value).
func (d *DOM) Find(want ...string) []Element {
	var out []Element
	for _, e := range d.Elements {
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			v, has := e.Attrs[want[i]]
			if !has || (want[i+1] != "*" && v != want[i+1]) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

// One returns the one element with the attributes of want, or an error when there are none or
// several.
func (d *DOM) One(want ...string) (Element, error) {
	found := d.Find(want...)
	if len(found) != 1 {
		return Element{}, fmt.Errorf("%d elements with %q, want 1", len(found), want)
	}
	return found[0], nil
}

// Text returns e's text content: from its start tag to its matching end tag (or the end of the
// DOM), tags removed and entities unescaped, each run of white space one space.
func (d *DOM) Text(e Element) string {
	tags := regexp.MustCompile(`(?i)<(/?)` + regexp.QuoteMeta(e.Tag) + `[\s>/]`)
	end, depth := len(d.HTML), 0
	for _, m := range tags.FindAllStringSubmatchIndex(d.HTML[e.start:], -1) {
		if m[3] > m[2] { // an end tag
			depth--
		} else {
			depth++
		}
		if depth == 0 {
			end = e.start + m[0]
			break
		}
	}
	s := html.UnescapeString(anyTag.ReplaceAllString(d.HTML[e.start:end], " "))
	return strings.Join(strings.Fields(s), " ")
}
