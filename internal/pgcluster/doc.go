// Package pgcluster owns throwaway local PostgreSQL clusters: a primary and
// any number of streaming replicas, each a real postgres server listening on
// 127.0.0.1, with data directories under one temporary directory. It exists
// for integration tests and for `pgtide local`; nothing in it is meant for
// production data (fsync is off, every loopback connection is trusted).
//
// A Cluster owns its temporary directory and every server process it starts;
// Close stops them all and removes the directory. A Node owns one data
// directory and serializes the pg_ctl operations on it (Start, Stop, Kill,
// Restart, Promote, Follow), so tests can drive failovers the way an operator
// would: stop the primary, promote a replica, make the old primary follow the
// new one (with pg_rewind when the histories diverged).
//
// PostgreSQL refuses to run as root. When the process is root, every
// PostgreSQL binary runs as the "postgres" OS user and the temporary
// directory is handed to that user; otherwise they run as the current user.
//
// The package starts no goroutines of its own beyond the ones os/exec and pgx
// use for the duration of a call; nothing keeps running after a method
// returns except the postgres server processes, which Close ends.
package pgcluster
