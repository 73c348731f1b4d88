// Package deploy_test checks what operators load beside pgtide: the Prometheus alert rules in
// prometheus/ (with promtool, the rules' own unit tests) and the Grafana dashboard in grafana/.
// Both name metrics; they are checked against the exporter's own list (admin.Metrics), so
// neither can drift from what /metrics serves.
package deploy_test

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"pgtide/internal/admin"
)

// metric is one series family of the contract: its labels, and whether it is a histogram (then
// expressions name its _bucket, _sum and _count series, never the bare name).
type metric struct {
	labels    []string
	histogram bool
}

// exported is every metric pgtide's /metrics serves, with its labels, as the exporter itself
// lists them: a rule or panel naming anything else would be silently empty.
var exported = func() map[string]metric {
	m := map[string]metric{}
	for _, mi := range admin.Metrics() {
		m[mi.Name] = metric{labels: mi.Labels, histogram: mi.Histogram}
	}
	return m
}()

// labelValues are the fixed value sets of the labels that have one; a matcher `label="value"`
// must use one of them. endpoint has none: its values are the operator's endpoint names.
var labelValues = map[string][]string{
	"role":   {"writer", "reader", "unknown"},
	"state":  {"active", "idle", "login", "waiting"},
	"route":  {"writer", "reader"},
	"change": {"down", "up"},
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"instance", "job"}

// prometheusUp is Prometheus' own per-target metric, which the rules may use (not the dashboard).
var prometheusUp = map[string]metric{"up": {}}

// tokenRE splits PromQL into strings, Grafana variables, numbers and durations, names, operators
// and single characters.
var tokenRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`" +
	`|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*|!=|=~|!~|==|>=|<=|\S`)

// notMetrics are the PromQL words that may stand where a metric name could, outside a call.
var notMetrics = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true,
}

// labelListWords are followed by a parenthesised list of label names.
var labelListWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlRefs is what one expression names: metric names, and per label name the values it is
// matched to with = or != ("" for each mention without such a value).
type promqlRefs struct {
	metrics []string
	labels  map[string][]string
}

// scanPromQL finds the metric and label names in expr. It is not a parser: it knows enough of
// PromQL's shape (selectors, label lists, calls, ranges) to tell names apart, and leaves syntax
// to promtool.
func scanPromQL(expr string) promqlRefs {
	refs := promqlRefs{labels: map[string][]string{}}
	toks := tokenRE.FindAllString(expr, -1)
	braces, brackets := 0, 0
	wantLabels, inLabels := false, false // after by, on, …; inside its parentheses
	for i, tok := range toks {
		next := ""
		if i+1 < len(toks) {
			next = toks[i+1]
		}
		switch {
		case tok == "{":
			braces++
		case tok == "}":
			braces--
		case tok == "[":
			brackets++
		case tok == "]":
			brackets--
		case wantLabels && tok == "(":
			wantLabels, inLabels = false, true
		case inLabels && tok == ")":
			inLabels = false
		case brackets > 0 || !isName(tok):
		case braces > 0:
			refs.labels[tok] = append(refs.labels[tok], "")
			if (next == "=" || next == "!=") && i+2 < len(toks) {
				refs.labels[tok] = append(refs.labels[tok], strings.Trim(toks[i+2], "\"'`"))
			}
		case inLabels:
			refs.labels[tok] = append(refs.labels[tok], "")
		case labelListWords[tok]:
			wantLabels = next == "("
		case notMetrics[tok] || next == "(":
		default:
			refs.metrics = append(refs.metrics, tok)
		}
	}
	return refs
}

func isName(tok string) bool {
	c := tok[0]
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// checkExpr reports each name in expr that the metrics in known (and Prometheus' target labels)
// do not have: an unknown metric, a histogram named bare, a label none of the expression's
// metrics carries, a value outside a label's fixed set.
func checkExpr(t *testing.T, where, expr string, known map[string]metric) {
	t.Helper()
	refs := scanPromQL(expr)
	if len(refs.metrics) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	allowed := slices.Clone(targetLabels)
	for _, name := range refs.metrics {
		m, ok := known[name]
		if base, suffix, found := cutHistogramSuffix(name); found {
			if hm, hok := known[base]; hok && hm.histogram {
				m, ok = hm, true
				if suffix == "_bucket" {
					allowed = append(allowed, "le")
				}
			}
		}
		switch {
		case !ok:
			t.Errorf("%s: %q uses %s, which pgtide does not export", where, expr, name)
		case m.histogram && !strings.HasSuffix(name, "_bucket") && !strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count"):
			t.Errorf("%s: %q uses the histogram %s without _bucket, _sum or _count", where, expr, name)
		}
		allowed = append(allowed, m.labels...)
	}
	for label, values := range refs.labels {
		if !slices.Contains(allowed, label) {
			t.Errorf("%s: %q uses label %q, which none of its metrics has", where, expr, label)
		}
		for _, v := range values {
			if set, fixed := labelValues[label]; fixed && v != "" && !strings.HasPrefix(v, "$") && !slices.Contains(set, v) {
				t.Errorf("%s: %q matches %s=%q; its values are %v", where, expr, label, v, set)
			}
		}
	}
}

func cutHistogramSuffix(name string) (base, suffix string, found bool) {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(name, s); ok {
			return b, s, true
		}
	}
	return "", "", false
}

func TestScanPromQL(t *testing.T) {
	for _, tc := range []struct {
		expr    string
		metrics []string
		labels  []string
	}{
		{`pgtide_node_up == 0`, []string{"pgtide_node_up"}, nil},
		{`absent(up{job="pgtide"})`, []string{"up"}, []string{"job"}},
		{`a > 0.1 and ignoring(role) b{role="reader"} == 1`, []string{"a", "b"}, []string{"role"}},
		{`histogram_quantile(0.99, sum by (le, node) (rate(h_bucket{node=~"$node"}[$__rate_interval])))`,
			[]string{"h_bucket"}, []string{"le", "node"}},
		{`sum without (instance) (increase(c_total[10m])) > 0`, []string{"c_total"}, []string{"instance"}},
		{`max by (node) (x{a="b, c}", d!="e"}) * on (node) group_left (f) y`, []string{"x", "y"}, []string{"a", "d", "f", "node"}},
	} {
		refs := scanPromQL(tc.expr)
		var labels []string
		for l := range refs.labels {
			labels = append(labels, l)
		}
		slices.Sort(labels)
		if !slices.Equal(refs.metrics, tc.metrics) || !slices.Equal(labels, tc.labels) {
			t.Errorf("scanPromQL(%q) = %v, labels %v; want %v, labels %v", tc.expr, refs.metrics, labels, tc.metrics, tc.labels)
		}
	}
}

// TestRulesUseExportedMetrics checks every `expr:` of the rules file against the contract. The
// rules file keeps each expression on its line, so reading lines is enough.
func TestRulesUseExportedMetrics(t *testing.T) {
	f, err := os.Open("prometheus/pgtide-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	known := maps.Clone(exported)
	maps.Copy(known, prometheusUp)
	n := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		expr, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "expr:")
		if !ok {
			continue
		}
		expr = strings.TrimSpace(expr)
		if expr == "" || expr[0] == '|' || expr[0] == '>' || expr[0] == '"' || expr[0] == '\'' {
			t.Errorf("pgtide-rules.yml:%d: keep the expression plain and on its line, for this test", line)
			continue
		}
		checkExpr(t, fmt.Sprintf("pgtide-rules.yml:%d", line), expr, known)
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("pgtide-rules.yml: no expr: lines found")
	}
}
