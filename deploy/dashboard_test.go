package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const dashboardFile = "grafana/pgtide-dashboard.json"

// dashboardExpr is one PromQL expression of the dashboard and where it stands.
type dashboardExpr struct {
	where, expr string
}

// dashboardExprs reads the dashboard and returns its panels' queries and its variables'
// label_values queries (the expression inside, and the label named).
func dashboardExprs(t *testing.T) (exprs []dashboardExpr, varLabels map[string]string) {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string            `json:"uid"`
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("%s: uid and title are needed for provisioning", dashboardFile)
	}
	ids := map[int]bool{}
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p struct {
				ID      int               `json:"id"`
				Type    string            `json:"type"`
				Title   string            `json:"title"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					RefID string `json:"refId"`
					Expr  string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: a panel: %v", dashboardFile, err)
			}
			if ids[p.ID] {
				t.Errorf("%s: panel id %d is used twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, dashboardExpr{fmt.Sprintf("panel %d %q, query %s", p.ID, p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)

	labelValuesRE := regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)
	varLabels = map[string]string{}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %s: query: %v", dashboardFile, v.Name, err)
		}
		m := labelValuesRE.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("%s: variable %s: want label_values(<expr>, <label>), have %q", dashboardFile, v.Name, q.Query)
			continue
		}
		where := "variable " + v.Name
		exprs = append(exprs, dashboardExpr{where, m[1]})
		varLabels[where] = m[2]
	}
	return exprs, varLabels
}

// TestDashboardUsesExportedMetrics keeps the dashboard in step with the exporter: every metric
// and label its queries name is one pgtide exports.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	exprs, varLabels := dashboardExprs(t)
	for _, e := range exprs {
		checkExpr(t, e.where, e.expr, exported)
		if label, ok := varLabels[e.where]; ok {
			// The label a variable lists, checked as a matcher on its expression.
			checkExpr(t, e.where, fmt.Sprintf("%s{%s!=\"\"}", e.expr, label), exported)
		}
	}
}

// TestDashboardPromQLParses has promtool parse every dashboard query, as a recording rule, with
// Grafana's interval variables replaced by a duration.
func TestDashboardPromQLParses(t *testing.T) {
	path := promtool(t)
	exprs, _ := dashboardExprs(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	grafanaIntervals := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	for i, e := range exprs {
		q, err := json.Marshal(grafanaIntervals.Replace(e.expr)) // a JSON string is a YAML one
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "      - record: dashboard:expr_%d\n        expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(path, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries (%v):\n%s\n%s", err, out, b.String())
	}
}
