//go:build !linux

package proxy

import "net"

// clientListenConfig is how endpoints listen on TCP: Go's default TCP keep-alive, set on each
// accepted connection.
var clientListenConfig = net.ListenConfig{}
