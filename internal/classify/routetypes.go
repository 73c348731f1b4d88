package classify

// Route is where a statement may run. (Placeholder until the classifier lands; replaced at merge.)
type Route uint8

// Routes.
const (
	RouteWriter Route = iota // the zero value: when in doubt, the writer
	RouteReader
)

func (r Route) String() string {
	if r == RouteReader {
		return "reader"
	}
	return "writer"
}

// RouteReason says why a statement takes its route.
type RouteReason uint8
