package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Table returns the results as a Markdown table, one row per fault.
func (r *Report) Table() string {
	var b strings.Builder
	b.WriteString("| fault | client errors by SQLSTATE class | longest write gap ms | longest read gap ms | longest one client waited ms | first write after the action ms | server connections max/cap per node | acknowledged writes | missing | errored writes (committed anyway) |\n")
	b.WriteString("|---|---|---:|---:|---:|---|---|---:|---:|---:|\n")
	for _, res := range r.Results {
		fault := res.Fault
		if res.Err != nil {
			fault += " (not completed)"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %s | %d | %d | %d (%d) |\n",
			fault, res.errorCell(), ms(res.WriteGap), ms(res.ReadGap), ms(res.Stall), res.backCell(),
			res.nodesCell(), res.Acked, res.Missing, res.Unsure, res.Committed)
	}
	return b.String()
}

// Details returns, per fault, one message of each error code, the notes and what failed.
func (r *Report) Details() string {
	var b strings.Builder
	for _, res := range r.Results {
		fmt.Fprintf(&b, "- **%s**: %d writes and %d reads succeeded", res.Fault, res.Writes, res.Reads)
		if res.Mark != "" {
			if res.ReadsBack < 0 {
				fmt.Fprintf(&b, "; no read succeeded after the %s", res.Mark)
			} else {
				fmt.Fprintf(&b, "; the first read %d ms after the %s", ms(res.ReadsBack), res.Mark)
			}
		}
		b.WriteString(".")
		for _, n := range res.Notes {
			fmt.Fprintf(&b, " %s%s.", strings.ToUpper(n[:1]), n[1:])
		}
		var backends []string
		for _, name := range sortedKeys(res.Nodes) {
			if st := res.Nodes[name]; st.maxBackends > 0 {
				backends = append(backends, fmt.Sprintf("%s %d", name, st.maxBackends))
			}
		}
		if len(backends) > 0 {
			fmt.Fprintf(&b, " Most backends of the clients' role in pg_stat_activity: %s.", strings.Join(backends, ", "))
		}
		for _, code := range sortedKeys(res.Codes) {
			var who []string
			for _, w := range sortedKeys(res.Who[code]) {
				who = append(who, fmt.Sprintf("%s %d", w, res.Who[code][w]))
			}
			fmt.Fprintf(&b, "\n  - `%s` ×%d (%s): %s", code, res.Codes[code], strings.Join(who, ", "), res.Samples[code])
		}
		if res.Err != nil {
			fmt.Fprintf(&b, "\n  - not completed: %s", oneLine(res.Err.Error()))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (res *Result) errorCell() string {
	classes := res.Classes()
	if len(classes) == 0 {
		return "none"
	}
	var parts []string
	for _, class := range sortedKeys(classes) {
		var codes []string
		for _, code := range sortedKeys(res.Codes) {
			if errorClass(code) == class && code != class {
				codes = append(codes, code)
			}
		}
		part := fmt.Sprintf("%s: %d", class, classes[class])
		if len(codes) > 0 {
			part += " (" + strings.Join(codes, ", ") + ")"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

func (res *Result) backCell() string {
	if res.Mark == "" {
		return "—"
	}
	if res.WritesBack < 0 {
		return "none after the " + res.Mark
	}
	return fmt.Sprintf("%d after the %s", ms(res.WritesBack), res.Mark)
}

func (res *Result) nodesCell() string {
	var parts []string
	for _, name := range sortedKeys(res.Nodes) {
		st := res.Nodes[name]
		part := fmt.Sprintf("%s %d/%d", name, st.maxConns, st.firstCap)
		if st.lastCap != st.firstCap {
			part += fmt.Sprintf("→%d", st.lastCap)
		}
		if st.overCap > 0 {
			part += fmt.Sprintf(" (over in %d samples)", st.overCap)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
