package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// AlarmKind says what went wrong.
type AlarmKind string

const (
	AlarmLostWrites       AlarmKind = "lost writes"       // acknowledged writes missing afterwards
	AlarmUnexpectedErrors AlarmKind = "unexpected errors" // errors of classes the fault does not explain, hangs included
	AlarmOverCap          AlarmKind = "over cap"          // server connections above the proxy's cap
	AlarmUnrecovered      AlarmKind = "unrecovered"       // clients not served without errors again within RecoverTimeout
	AlarmProxy            AlarmKind = "proxy"             // the proxy crashed, or its log shows a data race or a panic
)

// Alarm is one thing in a run that needs a person's attention.
type Alarm struct {
	Fault string // the fault's key; "" for the whole run
	Kind  AlarmKind
	Text  string
}

func (a Alarm) String() string {
	if a.Fault == "" {
		return a.Text
	}
	return a.Fault + ": " + a.Text
}

// alarms lists what in rep's results and in the proxy's log needs a person's attention.
func alarms(rep *Report, logPath string) []Alarm {
	var out []Alarm
	for _, r := range rep.Results {
		if r.Missing > 0 {
			out = append(out, Alarm{r.Key, AlarmLostWrites, fmt.Sprintf("%d acknowledged writes missing", r.Missing)})
		}
		if r.Unrecovered {
			out = append(out, Alarm{r.Key, AlarmUnrecovered, "clients not served without errors again within the recovery timeout"})
		}
		if len(r.Unexpected) > 0 {
			out = append(out, Alarm{r.Key, AlarmUnexpectedErrors, fmt.Sprintf("errors of unexpected classes %s: %s",
				strings.Join(r.Unexpected, ", "), sampleOf(r, r.Unexpected))})
		}
		for _, name := range sortedKeys(r.Nodes) {
			if st := r.Nodes[name]; st.overCap > 0 {
				out = append(out, Alarm{r.Key, AlarmOverCap, fmt.Sprintf("%s: server connections over the cap in %d samples (max %d, cap %d)",
					name, st.overCap, st.maxConns, st.lastCap)})
			}
		}
	}
	if rep.Missing > 0 {
		out = append(out, Alarm{"", AlarmLostWrites, fmt.Sprintf("end of run: %d of %d acknowledged writes missing", rep.Missing, rep.Acked)})
	}
	log := readFile(logPath)
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(log, bad) {
			out = append(out, Alarm{"", AlarmProxy, fmt.Sprintf("%q in %s's log", bad, rep.Target)})
		}
	}
	return out
}

// sampleOf returns a sample message of the first code of r in one of classes.
func sampleOf(r Result, classes []string) string {
	codes := make([]string, 0, len(r.Samples))
	for code := range r.Samples {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		if slices.Contains(classes, errorClass(code)) {
			return code + " " + r.Samples[code]
		}
	}
	return ""
}
