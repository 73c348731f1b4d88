package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pgtide/internal/headless"
)

// TestStatusPageSelfContained: the page loads nothing from elsewhere, and its CSP allows exactly
// its inline style and script.
func TestStatusPageSelfContained(t *testing.T) {
	rec := httptest.NewRecorder()
	servePage(rec, httptest.NewRequest("GET", "/", nil))
	page := rec.Body.String()
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "script-src 'sha256-", "style-src 'sha256-"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q allows unsafe sources", csp)
	}
	// Every URL the page names: only its own status.json and an empty data: icon.
	for _, m := range regexp.MustCompile(`(?:src|href|action)\s*=\s*"([^"]*)"|url\(([^)]*)\)|@import|fetch\(([^)]*)\)`).FindAllStringSubmatch(page, -1) {
		switch u := m[1] + m[2] + m[3]; u {
		case "data:,", "status.json", `"status.json", {cache: "no-store", signal: ctl.signal}`:
		default:
			t.Errorf("the page refers to %q", m[0])
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("the page names an absolute URL")
	}
	if strings.Contains(page, "innerHTML") || strings.Contains(page, "insertAdjacentHTML") || strings.Contains(page, "document.write") {
		t.Error("the page builds markup from strings; it must use text nodes")
	}
}

func TestPageCSPNeedsOneScript(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("pageCSP accepted a page with two scripts")
		}
	}()
	pageCSP([]byte("<style></style><script>a</script><script>b</script>"))
}

// hostile is a status.json whose names, as a hostile server or DNS could make them, would run
// script or inject markup if the page used them as HTML.
var hostile = func() []byte {
	evil := `<img src=x onerror="document.title='owned'">`
	t0 := time.Now().Add(-10 * time.Second)
	lb := int64(12345)
	st := Status{Time: time.Now(), Version: "1.0 " + evil, Writer: evil, WriterKnown: true,
		Nodes: []NodeStatus{
			{Addr: evil, Role: "writer", Up: true, Active: 7, Idle: 2, Budget: 25, MaxConnections: 100, Reserved: 3, Backends: 85, Weight: 1, LastCheck: &t0},
			{Addr: "replica&1:5432", Role: "reader", Up: false, LagSeconds: 0.25, LagBytes: &lb, Lagging: true, Budget: 25, Picked: 10, Outstanding: 1, Weight: 1},
		},
		Pools:     []PoolStatus{{Node: evil, Database: `"><script>document.title='owned'</script>`, User: "u", Active: 7, Idle: 2, Waiting: 1}},
		Clients:   map[string]ClientStates{"auto": {Active: 7}, "writer": {}, "reader": {}},
		Routing:   RoutingStatus{Writer: 3, Reader: 9, ByReason: map[string]RouteCounts{}},
		Changes:   []ChangeStatus{{Time: t0, Node: "replica&1:5432", Role: "writer", PrevRole: "reader", Up: true, PrevUp: true, Failover: true}},
		Failovers: 1,
	}
	b, err := json.Marshal(st)
	if err != nil {
		panic(err)
	}
	return b
}()

// TestStatusPageInChromium: the page, under its own CSP in headless Chromium, draws hostile names
// as text, marks the node over 80% of its ceiling, and goes visibly stale when status.json stops
// answering, keeping the last data.
func TestStatusPageInChromium(t *testing.T) {
	chromium := headless.Require(t)
	var served atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", servePage)
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) > 1 {
			http.Error(w, "gone", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(hostile)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	doc, err := headless.DumpDOM(ctx, chromium, t.TempDir(), srv.URL+"/", 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if served.Load() < 2 {
		t.Fatalf("the page fetched status.json %d times in 4 s, want ≥ 2", served.Load())
	}
	d := headless.Parse(doc)
	evil := `<img src=x onerror="document.title='owned'">`
	checks := []func() error{
		func() error {
			for _, e := range d.Elements {
				if e.Tag == "img" {
					return fmt.Errorf("an injected <%s> element", e.Tag)
				}
			}
			if n := strings.Count(doc, "<script"); n != 1 {
				return fmt.Errorf("%d <script> elements, want 1", n)
			}
			if strings.Contains(doc, "<title>owned") {
				return fmt.Errorf("injected script ran")
			}
			return nil
		},
		func() error { _, err := d.One("class", "node", "data-node", evil, "data-role", "writer"); return err },
		func() error { _, err := d.One("id", "writer", "data-writer", evil); return err },
		func() error {
			_, err := d.One("class", "node", "data-node", "replica&1:5432", "data-up", "false", "data-lagging", "true")
			return err
		},
		func() error {
			e, err := d.One("data-bar", "servers", "data-node", evil)
			if err != nil {
				return err
			}
			if e.Attrs["data-active"] != "7" || e.Attrs["data-value"] != "9" || e.Attrs["data-budget"] != "25" || e.Attrs["data-max"] != "100" {
				return fmt.Errorf("servers bar %v", e.Attrs)
			}
			if txt := d.Text(e); !strings.Contains(txt, "9 / 25") {
				return fmt.Errorf("servers bar text %q lacks 9 / 25", txt)
			}
			return nil
		},
		func() error {
			e, err := d.One("data-bar", "backends", "data-node", evil)
			if err != nil {
				return err
			}
			if e.Attrs["class"] != "meter hot" || e.Attrs["data-warn"] != "80" || !strings.Contains(d.Text(e), "85 / 100") {
				return fmt.Errorf("backends bar over 80%%: %v %q", e.Attrs, d.Text(e))
			}
			return nil
		},
		func() error {
			_, err := d.One("class", "change", "data-kind", "failover", "data-node", "replica&1:5432")
			return err
		},
		func() error {
			_, err := d.One("class", "pool waiting", "data-database", `"><script>document.title='owned'</script>`)
			return err
		},
		func() error {
			e, err := d.One("id", "conn-state")
			if err != nil {
				return err
			}
			if e.Attrs["data-state"] != "stale" {
				return fmt.Errorf("conn-state %v after status.json failed", e.Attrs)
			}
			b, err := d.One("id", "banner")
			if err != nil {
				return err
			}
			if txt := d.Text(b); !strings.Contains(txt, "HTTP 503") || !strings.Contains(txt, "showing data from") {
				return fmt.Errorf("banner %q", txt)
			}
			return nil
		},
		func() error { _, err := d.One("id", "sum-failovers", "data-value", "1"); return err },
	}
	for _, check := range checks {
		if err := check(); err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", doc)
	}
}
