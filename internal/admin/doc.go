// Package admin owns the operators' view of a running pgtide: the Prometheus metrics, the
// health endpoints (/healthz, /readyz) and the status page served on [admin] listen, the
// PgBouncer-style admin console reached through the virtual database "pgtide", and the short
// history of node state changes they show.
//
// It reads everything from a Source (the proxy) at the moment it is asked — a scrape, a SHOW, a
// refresh of the status page — and keeps nothing on the data path: the counters it reads are
// atomics the data path increments.
package admin
