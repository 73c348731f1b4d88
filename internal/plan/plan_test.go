package plan

import (
	"math"
	"strings"
	"testing"
)

// TestPublishedCeilings: the estimates reproduce the seed's published ceilings within 2%.
func TestPublishedCeilings(t *testing.T) {
	for _, tc := range []struct {
		class  string
		want   int
		capped bool
	}{
		{"db.t4g.medium", 410, false},
		{"db.r6g.large", 1660, false},
		{"db.r6g.xlarge", 3325, false},
		{"db.r6g.2xlarge", 5000, true},
		{"r6g.large", 1660, false}, // the "db." may be left out
	} {
		gib, ok := ClassMemoryGiB(tc.class)
		if !ok {
			t.Fatalf("%s: unknown class", tc.class)
		}
		p := Make(Input{Instance: tc.class, MemoryGiB: gib, AppInstances: 1, ProxyInstances: 1, Reserved: 3, SafetyFactor: 0.7})
		if off := math.Abs(float64(p.MaxConnections-tc.want)) / float64(tc.want); off > 0.02 || p.Capped != tc.capped {
			t.Errorf("%s: max_connections %d (capped %v), want %d (capped %v) within 2%%", tc.class, p.MaxConnections, p.Capped, tc.want, tc.capped)
		}
	}
}

func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		ceiling, reserved int
		factor            float64
		want              int
	}{
		{40, 3, 0.7, 25}, // the example: floor((40 − 3) × 0.7)
		{1660, 3, 0.7, 1159},
		{5000, 3, 0.7, 3497},
		{10, 3, 1, 7},
		{3, 3, 0.7, 0},
		{2, 3, 0.7, 0},
	} {
		if got := Budget(tc.ceiling, tc.reserved, tc.factor); got != tc.want {
			t.Errorf("Budget(%d, %d, %v) = %d, want %d", tc.ceiling, tc.reserved, tc.factor, got, tc.want)
		}
	}
}

func TestMake(t *testing.T) {
	gib, _ := ClassMemoryGiB("db.r6g.large")
	p := Make(Input{Instance: "db.r6g.large", MemoryGiB: gib, AppInstances: 10, Readers: 2, ProxyInstances: 2, Reserved: 3, SafetyFactor: 0.7})
	// The inequality holds: (writer + reader) × apps + reserved < ceiling × safety factor.
	if lhs := (p.WriterPool+p.ReaderPool)*10 + 3; float64(lhs) >= float64(p.MaxConnections)*0.7 {
		t.Fatalf("pools %d + %d for 10 apps break the inequality: %d ≥ %d × 0.7", p.WriterPool, p.ReaderPool, lhs, p.MaxConnections)
	}
	if p.WriterPool*2 > p.ReaderPool+1 || p.WriterPool == 0 {
		t.Errorf("writer %d, reader %d: want about one third and two thirds", p.WriterPool, p.ReaderPool)
	}
	if p.PerProxy != p.Budget/2 || len(p.Problems) != 0 {
		t.Errorf("per proxy %d of %d, problems %q", p.PerProxy, p.Budget, p.Problems)
	}
	// Too many application instances for a small class: said plainly, with what would fix it.
	small, _ := ClassMemoryGiB("db.t4g.medium")
	p = Make(Input{Instance: "db.t4g.medium", MemoryGiB: small, AppInstances: 500, ProxyInstances: 1, Reserved: 3, SafetyFactor: 0.7})
	if len(p.Problems) == 0 || !strings.Contains(p.Problems[0], "larger instance class") {
		t.Fatalf("500 apps on a db.t4g.medium: problems %q", p.Problems)
	}
}

func TestServerless(t *testing.T) {
	// 2 ACU = 4 GiB: the seed's ~410 at the floor.
	p := Make(Input{Instance: "serverless", MemoryGiB: 2 * GiBPerACU, AppInstances: 1, ProxyInstances: 1, Reserved: 3, SafetyFactor: 0.7})
	if off := math.Abs(float64(p.MaxConnections-410)) / 410; off > 0.02 {
		t.Errorf("2 ACU: max_connections %d, want about 410", p.MaxConnections)
	}
}

func TestClasses(t *testing.T) {
	for _, c := range []string{"db.t3.medium", "db.r5.24xlarge", "db.r6i.32xlarge", "db.r7g.16xlarge", "db.r8g.48xlarge", "db.x2g.16xlarge"} {
		if _, ok := ClassMemoryGiB(c); !ok {
			t.Errorf("%s: unknown", c)
		}
	}
	if gib, _ := ClassMemoryGiB("db.x2g.large"); gib != 32 {
		t.Errorf("db.x2g.large: %v GiB, want 32", gib)
	}
	if _, ok := ClassMemoryGiB("db.m5.large"); ok {
		t.Error("db.m5.large is not an Aurora PostgreSQL class pgtide knows")
	}
}
