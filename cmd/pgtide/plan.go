package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"pgtide/internal/plan"
)

const planUsage = `Usage: pgtide plan [flags]

Answers "how big may my pools be?" for Aurora PostgreSQL, without a database. For each instance
size: its memory, max_connections by Aurora's formula LEAST(DBInstanceClassMemory / 9531392,
5000), the budget (max_connections - reserved) x safety factor, each pgtide instance's share of
it, and writer and reader pool sizes per application instance (one third / two thirds of its
share) that keep

  (writer_pool + reader_pool) x app_instances + reserved < max_connections x safety_factor

DBInstanceClassMemory is the instance's memory less what the operating system and Aurora's own
processes keep; pgtide estimates it as 92% of the nominal memory, which matches the published
ceilings within 2%. On a running instance, SHOW max_connections is the figure to trust (pgtide
reads it from every node when it runs).

Examples:
  pgtide plan --instance-class db.r6g.large --app-instances 10
  pgtide plan --serverless-max-acu 16 --app-instances 4 --json

Flags:
`

// cmdPlan implements `pgtide plan`.
func cmdPlan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	classes := fs.String("instance-class", "db.t4g.medium,db.r6g.large,db.r6g.xlarge,db.r6g.2xlarge",
		`instance classes, comma-separated ("list" prints the ones pgtide knows)`)
	memory := fs.Float64("memory-gib", 0, "plan for an instance of this much memory (GiB) instead of a class")
	acu := fs.Float64("serverless-max-acu", 0, "plan for Aurora Serverless v2 with this maximum capacity (2 GiB per ACU) instead of a class")
	apps := fs.Int("app-instances", 1, "application instances sharing the cluster")
	readers := fs.Int("readers", 2, "reader instances in the cluster")
	proxies := fs.Int("proxy-instances", 1, "pgtide processes sharing each node")
	reserved := fs.Int("reserved", 3, "connections kept back on each node (superuser_reserved_connections, direct clients)")
	factor := fs.Float64("safety-factor", 0.7, "share of (max_connections - reserved) pools may take")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), planUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "pgtide plan: "+format+"\n", a...)
		return 2
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	sizes := 0
	for _, name := range []string{"instance-class", "memory-gib", "serverless-max-acu"} {
		if given[name] {
			sizes++
		}
	}
	switch {
	case sizes > 1 && *classes != "list":
		return bad("give one of --instance-class, --memory-gib and --serverless-max-acu")
	case given["memory-gib"] && !(*memory > 0 && *memory <= maxMemoryGiB):
		return bad("--memory-gib must be more than 0 and at most %d (GiB)", maxMemoryGiB)
	case given["serverless-max-acu"] && !(*acu >= 1 && *acu <= maxACU):
		return bad("--serverless-max-acu must be between 1 and %d (Aurora Serverless v2's range for a maximum)", maxACU)
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q", fs.Arg(0))
	case *apps < 1:
		return bad("--app-instances must be at least 1")
	case *readers < 0:
		return bad("--readers must not be negative")
	case *proxies < 1:
		return bad("--proxy-instances must be at least 1")
	case *reserved < 0:
		return bad("--reserved must not be negative")
	case !(*factor > 0 && *factor <= 1): // NaN too
		return bad("--safety-factor must be more than 0 and at most 1")
	}
	if *classes == "list" {
		fmt.Fprintln(stdout, strings.Join(plan.Classes(), "\n"))
		return 0
	}
	base := plan.Input{AppInstances: *apps, Readers: *readers, ProxyInstances: *proxies, Reserved: *reserved, SafetyFactor: *factor}
	var inputs []plan.Input
	switch {
	case *memory > 0:
		in := base
		in.Instance, in.MemoryGiB = fmt.Sprintf("%g GiB", *memory), *memory
		inputs = append(inputs, in)
	case *acu > 0:
		in := base
		in.Instance, in.MaxACU, in.MemoryGiB = fmt.Sprintf("serverless %g ACU", *acu), *acu, *acu*plan.GiBPerACU
		inputs = append(inputs, in)
	default:
		for _, c := range strings.Split(*classes, ",") {
			c = strings.TrimSpace(c)
			gib, ok := plan.ClassMemoryGiB(c)
			if !ok {
				return bad("unknown instance class %q (--instance-class list shows the known ones; --memory-gib plans for any size)", c)
			}
			in := base
			in.Instance, in.MemoryGiB = c, gib
			inputs = append(inputs, in)
		}
	}
	plans := make([]plan.Plan, len(inputs))
	for i, in := range inputs {
		plans[i] = plan.Make(in)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(plans); err != nil {
			fmt.Fprintln(stderr, "pgtide plan:", err)
			return 1
		}
	} else {
		printPlans(stdout, plans)
	}
	for _, p := range plans { // exit 1 when the setup cannot fit, with --json too
		if len(p.Problems) > 0 {
			return 1
		}
	}
	return 0
}

// printPlans writes plans as a table, then each plan's problems.
func printPlans(w io.Writer, plans []plan.Plan) {
	in := plans[0].Input
	fmt.Fprintf(w, "%d application instance(s), %d reader(s), %d pgtide instance(s), %d reserved per node, safety factor %g\n\n",
		in.AppInstances, in.Readers, in.ProxyInstances, in.Reserved, in.SafetyFactor)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "instance\tmemory GiB\tmax_connections\tbudget per node\tper pgtide\twriter pool per app\treader pool per app\t")
	for _, p := range plans {
		maxConn := fmt.Sprint(p.MaxConnections)
		if p.Capped {
			maxConn += " (cap)"
		}
		fmt.Fprintf(tw, "%s\t%g\t%s\t%d\t%d\t%d\t%d\t\n", p.Instance, p.MemoryGiB, maxConn, p.Budget, p.PerProxy, p.WriterPool, p.ReaderPool)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nWith pgtide in front, its pool_size per node summed over databases and users stays within \"per pgtide\";")
	fmt.Fprintln(w, "the application's own pools connect to pgtide and may be larger.")
	for _, p := range plans {
		for _, msg := range p.Problems {
			fmt.Fprintf(w, "\n%s: %s\n", p.Instance, msg)
		}
	}
}

// The largest sizes pgtide plan takes: more memory than any instance class has (db.x2iedn.32xlarge
// has 4,096 GiB), and Aurora Serverless v2's largest maximum capacity.
const (
	maxMemoryGiB = 24576
	maxACU       = 256
)
