// Package plan answers "how big may my pools be?" for Amazon Aurora PostgreSQL without a
// database: each instance's connection ceiling from its memory, the budget a safety factor leaves
// of it, and pool sizes per application instance that keep the seeds' inequality
//
//	(writer_pool + reader_pool) × app_instances + reserved < ceiling × safety_factor
//
// (seed 003, "Precision sizing & timeout orchestration"). It is pure computation: `pgtide plan`
// prints it.
package plan

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// BytesPerConnection is Aurora PostgreSQL's divisor: max_connections defaults to
// LEAST(DBInstanceClassMemory / 9531392, 5000) (Aurora User Guide, "Maximum connections to an
// Aurora PostgreSQL DB instance").
const BytesPerConnection = 9531392

// MaxConnectionsCap is the formula's upper bound.
const MaxConnectionsCap = 5000

// ClassMemoryFactor estimates DBInstanceClassMemory from an instance's nominal memory.
// DBInstanceClassMemory is the memory left to the database after what the operating system and
// Aurora's own processes reserve, which AWS does not publish per class; 92% of the nominal memory
// reproduces the published ceilings (db.t4g.medium ≈ 410, db.r6g.large ≈ 1,660, db.r6g.xlarge ≈
// 3,325) within 2%. A real instance's max_connections (SHOW max_connections) is the figure to
// trust; pgtide reads it from each node when it runs.
const ClassMemoryFactor = 0.92

// GiBPerACU is an Aurora Serverless v2 capacity unit's memory. Its max_connections follows the
// cluster's maximum ACU setting.
const GiBPerACU = 2

// MaxConnections returns Aurora PostgreSQL's default max_connections for classMemory bytes of
// DBInstanceClassMemory, and whether the 5,000 cap applies.
func MaxConnections(classMemory float64) (n int, capped bool) {
	n = int(classMemory / BytesPerConnection)
	if n >= MaxConnectionsCap {
		return MaxConnectionsCap, true
	}
	return n, false
}

// Budget returns the server connections a node may be given: floor((ceiling − reserved) ×
// safetyFactor), never negative.
func Budget(ceiling, reserved int, safetyFactor float64) int {
	return max(0, int(math.Floor(float64(ceiling-reserved)*safetyFactor+1e-9)))
}

// classes is the nominal memory in GiB of the Aurora PostgreSQL instance classes pgtide knows
// (Aurora User Guide, "Hardware specifications for DB instance classes for Aurora").
var classes = func() map[string]float64 {
	m := map[string]float64{
		"db.t3.medium": 4, "db.t3.large": 8,
		"db.t4g.medium": 4, "db.t4g.large": 8,
	}
	sizes := map[string]float64{ // memory-optimised families: 8 GiB per vCPU
		"large": 16, "xlarge": 32, "2xlarge": 64, "4xlarge": 128, "8xlarge": 256, "12xlarge": 384,
		"16xlarge": 512, "24xlarge": 768, "32xlarge": 1024, "48xlarge": 1536,
	}
	families := map[string][]string{
		"db.r5":  {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"},
		"db.r6g": {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"},
		"db.r6i": {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "32xlarge"},
		"db.r7g": {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"},
		"db.r8g": {"large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"},
	}
	for family, ss := range families {
		for _, s := range ss {
			m[family+"."+s] = sizes[s]
		}
	}
	for _, s := range []string{"large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"} {
		m["db.x2g."+s] = 2 * sizes[s] // 16 GiB per vCPU
	}
	return m
}()

// Classes returns the instance classes pgtide knows, sorted.
func Classes() []string {
	out := make([]string, 0, len(classes))
	for c := range classes {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// ClassMemoryGiB returns the nominal memory of an instance class ("db.r6g.large"; the "db." may
// be left out), ok false for a class pgtide does not know.
func ClassMemoryGiB(class string) (gib float64, ok bool) {
	class = strings.ToLower(class)
	if !strings.HasPrefix(class, "db.") {
		class = "db." + class
	}
	gib, ok = classes[class]
	return gib, ok
}

// Input is what a plan is computed from.
type Input struct {
	// Instance is a class name, "custom" (MemoryGiB given) or "serverless" (MaxACU given).
	Instance  string  `json:"instance"`
	MemoryGiB float64 `json:"memory_gib"`                   // nominal memory; for a class, from the table
	MaxACU    float64 `json:"serverless_max_acu,omitempty"` // Serverless v2: the cluster's maximum ACU
	// AppInstances is how many application instances share the cluster (with pgtide: how many
	// connect through it; pgtide's own pools are what reach the database).
	AppInstances int `json:"app_instances"`
	// Readers is how many reader instances the cluster has.
	Readers int `json:"readers"`
	// ProxyInstances is how many pgtide processes share each node (budget_mode = "static").
	ProxyInstances int `json:"proxy_instances"`
	// Reserved is the connections kept back on each node: superuser_reserved_connections
	// (Aurora's default 3) plus reserved_connections and whatever else connects directly.
	Reserved int `json:"reserved"`
	// SafetyFactor is the share of the rest pools may take (0.7: failover storms and Aurora's
	// own connections need the headroom).
	SafetyFactor float64 `json:"safety_factor"`
}

// Plan is the answer for one instance size.
type Plan struct {
	Input
	ClassMemoryBytes float64 `json:"class_memory_bytes"` // the DBInstanceClassMemory estimate (see ClassMemoryFactor)
	MaxConnections   int     `json:"max_connections"`
	Capped           bool    `json:"capped"` // the formula passes 5,000: the ceiling is the cap
	Budget           int     `json:"budget"` // per node: floor((max_connections − reserved) × safety_factor)
	// PerProxy is each pgtide instance's share of a node's budget (its pool_size cap per node
	// summed over every database and user).
	PerProxy int `json:"budget_per_proxy"`
	// WriterPool and ReaderPool are per application instance: the budget shared by the
	// application instances, one third to the writer pool and two thirds to the reader pool, as
	// the seed starts. Both pools count against one node's ceiling, as the inequality does: a
	// failover may point the reader endpoint at the writer.
	WriterPool int `json:"writer_pool_per_app"`
	ReaderPool int `json:"reader_pool_per_app"`
	// Problems says, in words, where the setup breaks the inequality and what would fix it.
	Problems []string `json:"problems"`
}

// Make computes the plan for in.
func Make(in Input) Plan {
	p := Plan{Input: in, Problems: []string{}}
	p.ClassMemoryBytes = in.MemoryGiB * (1 << 30) * ClassMemoryFactor
	p.MaxConnections, p.Capped = MaxConnections(p.ClassMemoryBytes)
	p.Budget = Budget(p.MaxConnections, in.Reserved, in.SafetyFactor)
	p.PerProxy = p.Budget / max(1, in.ProxyInstances)
	perApp := p.Budget / max(1, in.AppInstances)
	p.WriterPool = perApp / 3
	p.ReaderPool = perApp - p.WriterPool
	if p.WriterPool < 1 || p.ReaderPool < 1 {
		fit := p.Budget / 2
		p.Problems = append(p.Problems, fmt.Sprintf(
			"%d application instances cannot each have a writer and a reader connection within a budget of %d (at most %d can): "+
				"use a larger instance class, fewer application instances, or connect them through pgtide in transaction mode, "+
				"where many clients share few server connections", in.AppInstances, p.Budget, fit))
	}
	switch {
	case p.PerProxy < 1 && in.ProxyInstances > 1:
		p.Problems = append(p.Problems, fmt.Sprintf(
			"%d pgtide instances leave none of the budget (%d) to each: run fewer pgtide instances or use a larger class",
			in.ProxyInstances, p.Budget))
	case p.PerProxy < 1:
		p.Problems = append(p.Problems, fmt.Sprintf("the budget (%d) allows no server connection at all: use a larger class", p.Budget))
	}
	if in.Reserved >= p.MaxConnections {
		p.Problems = append(p.Problems, fmt.Sprintf("the reserved connections (%d) take the whole ceiling (%d)", in.Reserved, p.MaxConnections))
	}
	return p
}
