package admin

import (
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCatalogIsDescribed: the catalog that rules and dashboards are checked against (Metrics)
// is exactly what the Collector describes, name for name, and every name follows the
// conventions (pgtide_ prefix, unit or _total suffix where one applies).
func TestCatalogIsDescribed(t *testing.T) {
	ch := make(chan *prometheus.Desc, 100)
	(&Collector{}).Describe(ch)
	close(ch)
	nameRE := regexp.MustCompile(`fqName: "([^"]+)"`)
	var described []string
	for d := range ch {
		m := nameRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		described = append(described, m[1])
	}
	var listed []string
	for _, mi := range Metrics() {
		listed = append(listed, mi.Name)
		if !regexp.MustCompile(`^pgtide_[a-z_]+$`).MatchString(mi.Name) {
			t.Errorf("%s: not a pgtide_ snake_case name", mi.Name)
		}
	}
	slices.Sort(described)
	slices.Sort(listed)
	if !slices.Equal(described, listed) {
		t.Fatalf("described %v\nlisted %v", described, listed)
	}
}
