// Package wire owns the PostgreSQL wire protocol at the byte level: the startup packet (SSL and
// GSS encryption requests, CancelRequest, StartupMessage), message framing from the 5-byte header,
// raw forwarding of framed messages between buffered connections, and the ErrorResponses pgtide
// writes itself.
//
// The hot path frames by header and forwards raw bytes; only the few messages that pooling must
// inspect are looked at, and then in place, in the reader's buffer.
package wire
