package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	"pgtide/internal/config"
	"pgtide/internal/evloop"
	"pgtide/internal/router"
	"pgtide/internal/session"
	"pgtide/internal/wire"
)

// Accepting on the event loops. A client's TCP connection is accepted by a loop (evloop.Listen)
// and its login starts there, on the loop's thread, without a goroutine: the loop reads the
// startup packets as they come, answers an encryption request that pgtide refuses ('N', the
// common sslmode=prefer of libpq and JDBC without TLS configured) and waits for the next packet
// without holding anything but the connection's read buffer (preLogin). Once a whole
// StartupMessage is buffered, a trust login runs on the loop too (handle); whatever in it must
// wait (a server connection to dial, a TLS handshake, the admin console, a cancel request to
// forward) hands the loop to another goroutine first, as any code on a loop does (see package
// evloop), so the common login — trust, a pool that knows its server's parameters — runs from
// accept to the client's first request on one thread, as PgBouncer's does. A login that
// exchanges a password with the client goes to a login worker (see startHandle). Unix-domain
// sockets keep Go's accept (accept).

// loopAccept is the state of one TCP socket served by a loop. Owned by the loop.
type loopAccept struct {
	s       *Server
	l       *listener
	addr    net.Addr // the socket's
	failing bool     // in an episode of failures to accept
	backoff time.Duration
}

// listenOnLoops serves sock, a TCP socket of l, on the event loops, and reports whether it does.
// Requires s.mu.
func (s *Server) listenOnLoopsLocked(l *listener, sock net.Listener) bool {
	if s.env.Loops == nil {
		return false
	}
	if _, ok := sock.(*net.TCPListener); !ok {
		return false
	}
	la := &loopAccept{s: s, l: l, addr: sock.Addr()}
	ll, err := s.env.Loops.Listen(sock, la.accepted, la.failed)
	if err != nil {
		s.logger.Warn("accepting on a goroutine: the event loops cannot listen", "listen", sock.Addr().String(), "err", err)
		return false
	}
	l.loopSocks = append(l.loopSocks, ll)
	return true
}

// accepted starts the login of c, on its loop.
func (la *loopAccept) accepted(c *evloop.Conn) {
	s := la.s
	if la.failing {
		s.logger.Info("accepting client connections again", "endpoint", la.l.ep.Load().Name(), "listen", la.addr.String())
		la.failing, la.backoff = false, 0
	}
	s.conns.Add(1)
	n := s.clients.Add(1) // counted from accept, as max_client_connections counts
	if !s.trackLogin(c) {
		c.Close()
		s.clients.Add(-1)
		s.conns.Done()
		return
	}
	// client_login_timeout bounds the login from here: a client that sends nothing is closed.
	c.SetDeadline(time.Now().Add(s.cfg.Load().Proxy.ClientLoginTimeout.Duration))
	c.SetTry(true)
	pl := &preLogin{s: s, c: c, ep: la.l.ep.Load(), br: session.NewClientReader(c), n: n}
	pl.fn = pl.step
	c.Post(pl.fn)
}

// failed is accept's episode of failures (as the goroutine's, see accept): logged when it starts,
// counted, and waited out, doubling the pause.
func (la *loopAccept) failed(err error) time.Duration {
	s := la.s
	s.acceptErrors.Add(1)
	if !la.failing {
		la.failing = true
		s.logger.Warn("cannot accept client connections; retrying", "endpoint", la.l.ep.Load().Name(),
			"listen", la.addr.String(), "err", err)
	}
	la.backoff = min(max(2*la.backoff, acceptBackoffMin), acceptBackoffMax)
	return la.backoff
}

// preLogin is a client connection accepted on a loop whose StartupMessage has not come yet.
type preLogin struct {
	s            *Server
	c            *evloop.Conn
	ep           *router.Endpoint
	br           *wire.BufReader // reads c in try mode until handle
	negotiations int             // encryption requests answered
	n            int64           // see login
	fn           func()          // step, made once
}

// step reads what the client sent, on c's loop: it answers encryption requests pgtide refuses,
// and waits on the loop for more until a StartupMessage (or anything else) is whole in the
// buffer; then it runs the login, handle, from there.
func (pl *preLogin) step() {
	s, br := pl.s, pl.br
	for {
		hdr, err := br.Peek(8)
		if len(hdr) > 0 && hdr[0] == wire.TLSHandshakeByte && pl.negotiations == 0 {
			break // direct TLS: handle takes it
		}
		if len(hdr) >= 4 {
			if n := int(int32(binary.BigEndian.Uint32(hdr))); n < 8 || n > br.Size() {
				break // handle refuses it, or reads the rest itself
			}
		}
		if len(hdr) == 8 {
			n, encryption, ssl := wire.PeekStartup(hdr)
			offered := ssl && s.clientTLS.Load().Offered()
			if encryption && !offered && pl.negotiations < 2 && br.Buffered() == 8 {
				// Refused, as readStartup would: 'N', then the next packet.
				br.Discard(8)
				pl.negotiations++
				if _, err := pl.c.Write([]byte{'N'}); err != nil {
					pl.end()
					return
				}
				continue
			}
			if encryption {
				break // handle answers it
			}
			if _, err = br.Peek(n); err == nil {
				break // whole
			}
		}
		if errors.Is(err, evloop.ErrWouldBlock) {
			if pl.c.OnReadable(pl.fn) {
				return // the loop runs step again when more comes
			}
			continue
		}
		if err != nil {
			// The client left, or client_login_timeout passed: as readStartup would, silently.
			pl.end()
			return
		}
		break
	}
	pl.c.SetTry(false)
	if s.cfg.Load().Auth.Method != config.AuthTrust {
		// An exchange of messages with the client, and hashing: on a login worker, which
		// waits for the client's answers as a goroutine does, leaving the loop to the others.
		s.startHandle(pl.login())
		return
	}
	s.handle(pl.login())
}

func (pl *preLogin) login() login {
	return login{conn: pl.c, ep: pl.ep, br: pl.br, negotiations: pl.negotiations, n: pl.n}
}

// end closes a connection that never reached handle.
func (pl *preLogin) end() {
	pl.s.untrackLogin(pl.c)
	pl.c.Close()
	pl.s.clients.Add(-1)
	pl.s.conns.Done()
}
