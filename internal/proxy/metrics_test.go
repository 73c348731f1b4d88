package proxy_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"pgtide/internal/config"
)

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

// value returns the value of the series of family name whose labels include want (name=value
// pairs), summed over every matching series; ok is false when none matches.
func (s scrape) value(name string, want ...string) (v float64, ok bool) {
	mf := s[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		ok = true
		switch {
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v, ok
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (p *testProxy) scrape(t *testing.T) scrape {
	t.Helper()
	code, body := httpGet(t, "http://"+p.AdminAddr().String()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// TestMetrics: /metrics parses with Prometheus' own text parser and its values follow what
// happens: node roles and ceilings, routing decisions, pool traffic, errors by SQLSTATE class,
// clients waiting for a full pool; /healthz and /readyz answer.
func TestMetrics(t *testing.T) {
	c := sharedRoutingCluster(t)
	p := routingProxy(t, c, func(cfg *config.Config) {
		cfg.Admin.Listen = "127.0.0.1:0"
		cfg.Cluster.PoolSize = 2
	})
	waitReaders(t, p, 2)
	base := "http://" + p.AdminAddr().String()
	if code, body := httpGet(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	// Ready once Serve has started the endpoints, which the test's Serve goroutine may not
	// have reached yet on a busy machine.
	waitFor(t, 30*time.Second, "/readyz to answer 200", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 200
	})

	writer := c.Primary().Addr()
	waitFor(t, 30*time.Second, "the nodes' ceilings in /metrics", func() bool {
		s := p.scrape(t)
		for _, n := range c.Nodes() {
			if v, _ := s.value("pgtide_node_max_connections", "node", n.Addr()); v < 1 {
				return false
			}
		}
		return true
	})
	s := p.scrape(t)
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"pgtide_writer_known", nil, 1},
		{"pgtide_node_up", []string{"node", writer}, 1},
		{"pgtide_node_role", []string{"node", writer, "role", "writer"}, 1},
		{"pgtide_node_role", []string{"node", writer, "role", "reader"}, 0},
		{"pgtide_node_role", []string{"node", c.Replicas()[0].Addr(), "role", "reader"}, 1},
		{"pgtide_node_replication_lag_seconds", []string{"node", writer}, 0},
		{"pgtide_failovers_total", nil, 0},
	} {
		if v, ok := s.value(want.name, want.labels...); !ok || v != want.value {
			t.Errorf("%s%v = %v (present %v), want %v", want.name, want.labels, v, ok, want.value)
		}
	}
	if v, _ := s.value("pgtide_node_budget_connections", "node", writer); v < 1 {
		t.Errorf("writer's budget %v", v)
	}
	if _, ok := s.value("pgtide_build_info"); !ok {
		t.Error("no pgtide_build_info")
	}
	if v, ok := s.value("pgtide_tls_certificate_expiry_timestamp_seconds"); ok {
		t.Errorf("a certificate expiry without client TLS: %v", v)
	}
	for _, name := range []string{"pgtide_routing_decisions_total", "pgtide_client_errors_total", "pgtide_pinned_clients_total"} {
		if s[name] == nil {
			t.Errorf("%s missing before any traffic", name)
		}
	}
	before := s

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := p.connect(t, "postgres", "postgres", pgx.QueryExecModeSimpleProtocol)
	const n = 20
	for range n {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT txid_current()"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, "SELEC 1"); pgCode(err) != "42601" {
		t.Fatalf("a syntax error: %v", err)
	}

	s = p.scrape(t)
	delta := func(name string, labels ...string) float64 {
		a, _ := before.value(name, labels...)
		b, _ := s.value(name, labels...)
		return b - a
	}
	if d := delta("pgtide_routing_decisions_total", "route", "reader"); d < n {
		t.Errorf("reader routing decisions grew by %v, want ≥ %d", d, n)
	}
	if d := delta("pgtide_routing_decisions_total", "route", "writer"); d < n {
		t.Errorf("writer routing decisions grew by %v, want ≥ %d", d, n)
	}
	if d := delta("pgtide_pool_queries_total", "node", writer, "database", "postgres", "user", "postgres"); d < n {
		t.Errorf("writer pool's queries grew by %v, want ≥ %d", d, n)
	}
	if d := delta("pgtide_pool_transactions_total", "database", "postgres"); d < 2*n {
		t.Errorf("transactions grew by %v, want ≥ %d", d, 2*n)
	}
	if d := delta("pgtide_pool_wait_seconds", "database", "postgres"); d < 2*n {
		t.Errorf("waits observed grew by %v, want ≥ %d", d, 2*n)
	}
	if d := delta("pgtide_client_errors_total", "class", "42"); d != 1 {
		t.Errorf("class 42 errors grew by %v, want 1", d)
	}
	if v, _ := s.value("pgtide_client_connections", "endpoint", "auto", "state", "idle"); v < 1 {
		t.Errorf("idle auto-endpoint clients %v, want ≥ 1", v)
	}

	// Fill the writer's pool (pool_size 2) with open transactions: a third client waits, and
	// the gauges say so.
	var holders []*pgx.Conn
	for range 2 {
		h := p.connect(t, "postgres", "postgres", pgx.QueryExecModeSimpleProtocol)
		if _, err := h.Exec(ctx, "BEGIN; SELECT txid_current()"); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, h)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		_, err := conn.Exec(ctx, "SELECT txid_current()")
		errc <- err
	}()
	waitFor(t, 30*time.Second, "a waiting client in /metrics", func() bool {
		s := p.scrape(t)
		waiting, _ := s.value("pgtide_pool_clients_waiting", "node", writer, "database", "postgres")
		clients, _ := s.value("pgtide_client_connections", "state", "waiting")
		active, _ := s.value("pgtide_pool_server_connections", "node", writer, "database", "postgres", "state", "active")
		return waiting == 1 && clients == 1 && active == 2
	})
	for _, h := range holders {
		if _, err := h.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatalf("the waiting client: %v", err)
	}
	s = p.scrape(t)
	if v, _ := s.value("pgtide_pool_clients_waiting", "node", writer); v != 0 {
		t.Errorf("%v clients still waiting", v)
	}
}
