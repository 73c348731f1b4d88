package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// dialServer opens a server connection and logs it in with trust authentication, with blocking
// system calls (this happens at startup, before the loops run). It returns the descriptor in
// non-blocking mode, and the raw ParameterStatus messages the server sent.
func dialServer(o options) (fd int, params []byte, err error) {
	addr, err := net.ResolveTCPAddr("tcp", o.server)
	if err != nil {
		return -1, nil, err
	}
	ip4 := addr.IP.To4()
	if ip4 == nil {
		return -1, nil, fmt.Errorf("server %s: the prototype dials IPv4 addresses only", o.server)
	}
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	sa := &unix.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], ip4)
	if err = unix.Connect(fd, sa); err != nil {
		return -1, nil, fmt.Errorf("connect %s: %w", o.server, err)
	}
	if err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return -1, nil, err
	}
	if err = writeAll(fd, startupMessage(o.user, o.database)); err != nil {
		return -1, nil, fmt.Errorf("send startup message: %w", err)
	}
	if params, err = readLogin(fd); err != nil {
		return -1, nil, fmt.Errorf("log in to %s as %s: %w", o.server, o.user, err)
	}
	if err = unix.SetNonblock(fd, true); err != nil {
		return -1, nil, err
	}
	return fd, params, nil
}

// startupMessage builds a protocol 3.0 StartupMessage.
func startupMessage(user, database string) []byte {
	b := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	for _, kv := range [][2]string{{"user", user}, {"database", database}} {
		b = append(b, kv[0]...)
		b = append(b, 0)
		b = append(b, kv[1]...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// readLogin reads the server's answer to the startup message up to ReadyForQuery, accepting
// only AuthenticationOk, and collects the ParameterStatus messages.
func readLogin(fd int) ([]byte, error) {
	var in, params []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, errors.New("server closed the connection")
		}
		in = append(in, buf[:n]...)
		for len(in) >= 5 {
			size := int(binary.BigEndian.Uint32(in[1:5])) + 1
			if size < 5 || len(in) < size {
				break
			}
			msg := in[:size]
			in = in[size:]
			switch msg[0] {
			case 'R':
				if size < 9 || binary.BigEndian.Uint32(msg[5:9]) != 0 {
					return nil, errors.New("the server asks for a password; the prototype logs in with trust only")
				}
			case 'S':
				params = append(params, msg...)
			case 'E':
				return nil, fmt.Errorf("server error: %q", msg[5:])
			case 'Z':
				return params, nil
			}
		}
	}
}

// writeAll writes b to a blocking descriptor.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// probeGreeting logs in once to learn the server's ParameterStatus messages and builds the bytes
// every client gets after its startup message: AuthenticationOk, those parameters, a
// BackendKeyData the prototype cannot honour (cancel requests are not supported) and
// ReadyForQuery 'I'.
func probeGreeting(o options) ([]byte, error) {
	fd, params, err := dialServer(o)
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	g := []byte{'R', 0, 0, 0, 8, 0, 0, 0, 0}
	g = append(g, params...)
	g = append(g, 'K', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0)
	g = append(g, 'Z', 0, 0, 0, 5, 'I')
	return g, nil
}
