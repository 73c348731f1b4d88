package admin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"pgtide/internal/wire"
)

// command is one console command.
type command struct {
	verb             string // as parseStatement returns it: "SHOW POOLS"
	usage            string // for SHOW HELP and usage errors
	minArgs, maxArgs int
	// admin: only [auth] admin_users may run it; stats_users may run the others (the SHOWs).
	admin bool
	// run appends the command's answer (without ReadyForQuery) to c.out. A *wire.Error is the
	// client's; any other error ends the connection.
	run func(c *Console, args []string) error
}

// commands are the console's commands, in SHOW HELP's order. Set by init: SHOW HELP reads it.
var commands []command

func init() {
	commands = []command{
		{verb: "SHOW HELP", run: (*Console).showHelp},
		{verb: "SHOW POOLS", run: (*Console).showPools},
		{verb: "SHOW CLIENTS", run: (*Console).showClients},
		{verb: "SHOW SERVERS", run: (*Console).showServers},
		{verb: "SHOW STATS", run: (*Console).showStats},
		{verb: "SHOW DATABASES", run: (*Console).showDatabases},
		{verb: "SHOW NODES", run: (*Console).showNodes},
		{verb: "SHOW ENDPOINTS", run: (*Console).showEndpoints},
		{verb: "SHOW CONFIG", run: (*Console).showConfig},
		{verb: "SHOW VERSION", run: (*Console).showVersion},
		{verb: "RELOAD", admin: true, run: (*Console).reload},
		{verb: "PAUSE", usage: "PAUSE [db]", maxArgs: 1, admin: true, run: (*Console).pause},
		{verb: "RESUME", usage: "RESUME [db]", maxArgs: 1, admin: true, run: (*Console).resume},
		{verb: "RECONNECT", usage: "RECONNECT [db]", maxArgs: 1, admin: true, run: (*Console).reconnect},
		{verb: "KILL_CLIENT", usage: "KILL_CLIENT id", minArgs: 1, maxArgs: 1, admin: true, run: (*Console).killClient},
	}
	for i := range commands {
		if commands[i].usage == "" {
			commands[i].usage = commands[i].verb
		}
	}
}

func lookup(verb string) *command {
	for i := range commands {
		if commands[i].verb == verb {
			return &commands[i]
		}
	}
	return nil
}

// showHelp lists the commands in a NOTICE, as PgBouncer does.
func (c *Console) showHelp([]string) error {
	var b strings.Builder
	for _, cmd := range commands {
		b.WriteString("\n\t" + cmd.usage)
	}
	c.notice("Console usage", b.String())
	c.send(nil, "SHOW")
	return nil
}

// reload reloads the configuration file, as SIGHUP does.
func (c *Console) reload([]string) error {
	if err := c.src.ReloadConfig(); err != nil {
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeConfigFileError,
			Message: "RELOAD failed; the running configuration is kept: " + err.Error()}
	}
	c.send(nil, "RELOAD")
	return nil
}

// pausePoll is how often a PAUSE checks whether the connections it waits for are released.
const pausePoll = 20 * time.Millisecond

// pause stops lending server connections of one database, or of all, and returns once every
// server connection of them has been released and closed: transaction mode, when the running
// transactions end; session mode (and pinned clients), when their clients disconnect. A
// CancelRequest, the client leaving or a shutdown ends the wait and undoes the pause.
func (c *Console) pause(args []string) error {
	db, err := c.databaseArg("PAUSE", args)
	if err != nil {
		return err
	}
	pools := c.src.Pools()
	if all, _ := pools.Pauses(); all {
		// As PgBouncer: a PAUSE of everything excludes any other PAUSE until RESUME.
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeNotInPrerequisiteState,
			Message: "pgtide is already paused; RESUME first"}
	}
	changed := pools.Pause(db)
	ctx, done := c.cancellable() // before the NOTICE: a cancel may follow it at once
	defer done()
	if n := pools.ServerCount(db); n > 0 {
		c.notice(fmt.Sprintf("PAUSE waits for %d server connection(s) in use to be released", n),
			"Transactions in progress finish first; session-mode and pinned clients hold theirs until they disconnect. Cancel (Ctrl-C) to undo the PAUSE.")
		if err := c.flush(); err != nil {
			if changed {
				pools.Resume(db)
			}
			return err
		}
	}
	t := time.NewTicker(pausePoll)
	defer t.Stop()
	for pools.ServerCount(db) > 0 {
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
		}
		if changed {
			pools.Resume(db)
		}
		c.logger.Info("admin console: PAUSE ended before its connections were released; undone", "database", db)
		if c.ctx.Err() != nil {
			return &wire.Error{Severity: wire.SeverityFatal, Code: wire.CodeAdminShutdown,
				Message: "terminating connection because pgtide is shutting down"}
		}
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeQueryCanceled,
			Message: "canceling PAUSE due to user request; the pause is undone"}
	}
	c.send(nil, "PAUSE")
	return nil
}

// resume ends the PAUSE of one database, or every pause.
func (c *Console) resume(args []string) error {
	db, err := c.databaseArg("RESUME", args)
	if err != nil {
		return err
	}
	pools := c.src.Pools()
	all, dbs := pools.Pauses()
	switch {
	case db == "" && !all && len(dbs) == 0:
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeNotInPrerequisiteState, Message: "pgtide is not paused"}
	case db == "":
		pools.Resume("")
		for _, d := range dbs {
			pools.Resume(d)
		}
	case pools.Resume(db):
	case all:
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeNotInPrerequisiteState,
			Message: fmt.Sprintf("database %q is not paused by itself: every database is (RESUME without a database ends that)", db)}
	default:
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeNotInPrerequisiteState,
			Message: fmt.Sprintf("database %q is not paused", db)}
	}
	c.send(nil, "RESUME")
	return nil
}

// reconnect renews the server connections of one database, or of all: idle ones are closed now,
// the ones in use when they are released.
func (c *Console) reconnect(args []string) error {
	db, err := c.databaseArg("RECONNECT", args)
	if err != nil {
		return err
	}
	c.src.Pools().Reconnect(db)
	c.send(nil, "RECONNECT")
	return nil
}

// killClient closes one client's connection at once, given its id from SHOW CLIENTS.
func (c *Console) killClient(args []string) error {
	id, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeInvalidParameterValue,
			Message: fmt.Sprintf("KILL_CLIENT takes a client's id from SHOW CLIENTS, not %q", args[0])}
	}
	switch err := c.src.KillClient(uint32(id)); {
	case errors.Is(err, ErrNoSuchClient):
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeUndefinedObject,
			Message: fmt.Sprintf("no client with id %d (SHOW CLIENTS lists them)", id)}
	case err != nil:
		return &wire.Error{Severity: wire.SeverityError, Code: wire.CodeNotInPrerequisiteState, Message: err.Error()}
	}
	c.send(nil, "KILL_CLIENT")
	return nil
}

// databaseArg returns a command's optional database ("" for all); the console's own databases
// cannot be named.
func (c *Console) databaseArg(verb string, args []string) (string, error) {
	if len(args) == 0 {
		return "", nil
	}
	if args[0] == "" {
		// PAUSE "" must not mean PAUSE (everything): a script's empty variable would stall the
		// whole proxy. PostgreSQL's words for it.
		return "", &wire.Error{Severity: wire.SeverityError, Code: "42601",
			Message: `zero-length delimited identifier at or near """"`}
	}
	if IsConsoleDatabase(args[0]) {
		return "", &wire.Error{Severity: wire.SeverityError, Code: wire.CodeFeatureNotSupported,
			Message: fmt.Sprintf("%s of the admin console's own database %q", verb, args[0])}
	}
	return args[0], nil
}
