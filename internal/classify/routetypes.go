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

// Placeholder reasons until the classifier lands.
const (
	ReasonReadOnly RouteReason = iota
	ReasonUnclassified
	ReasonHintReader
	ReasonHintWriter
)

func (r RouteReason) String() string { return "unclassified" }

// FuncKind is what is known of a function by name.
type FuncKind uint8

// Function kinds.
const (
	FuncUnknown FuncKind = iota
	FuncRead
	FuncWrite
)

// Functions tells the classifier about the database's functions.
type Functions interface {
	Lookup(schema, name []byte) FuncKind
}

// RouteInfo is the classification of one Query text or one Parse text.
type RouteInfo struct {
	Route           Route
	Reason          RouteReason
	Begin, ReadOnly bool
}

// ClassifyRoute placeholder: everything to the writer.
func ClassifyRoute(sql []byte, fns Functions) RouteInfo {
	return RouteInfo{Route: RouteWriter, Reason: ReasonUnclassified}
}

// RouteCommandKind placeholder.
type RouteCommandKind uint8

// Route commands.
const (
	RouteCommandNone RouteCommandKind = iota
	RouteCommandSet
	RouteCommandShow
)

// ParseRouteCommand placeholder.
func ParseRouteCommand(sql []byte) (kind RouteCommandKind, value Route, auto bool, err error) {
	return RouteCommandNone, 0, false, nil
}
