package wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// HeaderLen is the size of a regular message header: a type byte and a big-endian int32 length
// that counts itself but not the type byte.
const HeaderLen = 5

// BufferSize is the size of the buffers on each side of a relay. A message that fits is forwarded
// with one copy; a larger one is streamed through in BufferSize pieces.
const BufferSize = 16 << 10

// MessageTooLargeError reports a message whose declared length exceeds the reader's limit.
type MessageTooLargeError struct {
	Type byte
	Len  int
	Max  int
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("message of type %q is %d bytes long, more than the limit of %d", e.Type, e.Len, e.Max)
}

// MalformedError reports a message header that cannot be valid.
type MalformedError struct {
	Type byte
	Len  int
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("invalid message length %d for message of type %q", e.Len, e.Type)
}

// Reader frames messages from a buffered stream. It is owned by one goroutine at a time.
//
// Use: Next to learn the type and length of the next message, then exactly one of Body, Forward or
// Skip to consume it.
type Reader struct {
	br      *BufReader
	max     int
	typ     byte
	bodyLen int // body length of the current message; -1 when consumed
	scratch []byte
}

// NewReader returns a Reader over br that refuses messages longer than max bytes.
func NewReader(br *BufReader, max int) *Reader {
	return &Reader{br: br, max: max, bodyLen: -1}
}

// Reset points r at a new buffered stream, keeping its scratch buffer.
func (r *Reader) Reset(br *BufReader) {
	r.br = br
	r.bodyLen = -1
}

// DropScratch lets go of the buffer kept for large message bodies (an idle client keeps none).
func (r *Reader) DropScratch() { r.scratch = nil }

// SetMax changes the message length limit.
func (r *Reader) SetMax(max int) { r.max = max }

// Buffered reports how many bytes can be read without blocking. Zero means the peer has nothing
// more in flight that we have seen: the moment to flush what was forwarded.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Ready reports whether Next and the body of the message it reads will not read the stream: the
// message is whole in the buffer. It is also true for a message that cannot be (a length too
// short, or too long for the buffer), whose reading is then Next's and the caller's to do. It
// must be called between messages (after the body was consumed).
func (r *Reader) Ready() bool {
	win := r.br.window()
	if len(win) < HeaderLen {
		return false
	}
	n := int(int32(binary.BigEndian.Uint32(win[1:])))
	return n < 4 || 1+n > len(r.br.buf) || 1+n <= len(win)
}

// Fill reads until Ready, or until a read fails (its error). With a stream that does not wait
// (an event loop's try-read), a nil error may come back with Ready still false.
func (r *Reader) Fill() error {
	hdr := r.br.window()
	if len(hdr) < HeaderLen {
		var err error
		if hdr, err = r.br.peek(HeaderLen); err != nil {
			return err
		}
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 || 1+n > len(r.br.buf) || 1+n <= len(hdr) {
		return nil
	}
	_, err := r.br.peek(1 + n)
	return err
}

// Next reads the next message header and returns its type and body length. The body is not
// consumed.
func (r *Reader) Next() (typ byte, bodyLen int, err error) {
	if r.bodyLen >= 0 {
		if err := r.Skip(); err != nil {
			return 0, 0, err
		}
	}
	hdr := r.br.window()
	if len(hdr) < HeaderLen {
		if hdr, err = r.br.peek(HeaderLen); err != nil {
			if err == io.EOF && len(hdr) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, 0, err
		}
	}
	typ = hdr[0]
	n := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 {
		return 0, 0, &MalformedError{Type: typ, Len: n}
	}
	if n > r.max {
		return 0, 0, &MessageTooLargeError{Type: typ, Len: n, Max: r.max}
	}
	r.typ = typ
	r.bodyLen = n - 4
	return typ, r.bodyLen, nil
}

// BodyLen returns the body length of the current message (as Next returned it), or -1 once it
// has been consumed.
func (r *Reader) BodyLen() int { return r.bodyLen }

// Body consumes the current message and returns its body. The slice is only valid until the next
// call on r.
func (r *Reader) Body() ([]byte, error) {
	n := r.bodyLen
	if n < 0 {
		panic("wire: Body without Next")
	}
	r.bodyLen = -1
	if HeaderLen+n <= len(r.br.buf) {
		b := r.br.window()
		if len(b) < HeaderLen+n {
			var err error
			if b, err = r.br.peek(HeaderLen + n); err != nil {
				return nil, unexpected(err)
			}
		}
		r.br.r += HeaderLen + n
		return b[HeaderLen : HeaderLen+n], nil
	}
	r.br.Discard(HeaderLen)
	if cap(r.scratch) < n {
		r.scratch = make([]byte, n)
	}
	b := r.scratch[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, unexpected(err)
	}
	return b, nil
}

// Forward consumes the current message and writes it, header and all, to w. Bytes go from r's
// buffer to w's without an intermediate copy; large messages are streamed.
func (r *Reader) Forward(w *bufio.Writer) error {
	n := r.bodyLen
	if n < 0 {
		panic("wire: Forward without Next")
	}
	r.bodyLen = -1
	return r.stream(w, HeaderLen+n)
}

// stream copies the next remaining bytes from r's buffer to w, passing on whatever part has
// arrived rather than waiting for all of it.
func (r *Reader) stream(w *bufio.Writer, remaining int) error {
	for remaining > 0 {
		b := r.br.window()
		if len(b) == 0 {
			var err error
			if b, err = r.br.peek(1); err != nil { // wait for more to arrive
				return unexpected(err)
			}
			b = r.br.window()
		}
		// Forward what has arrived rather than wait for the rest of a large message.
		chunk := min(remaining, len(b))
		if _, err := w.Write(b[:chunk]); err != nil {
			return err
		}
		r.br.r += chunk
		remaining -= chunk
	}
	return nil
}

// Skip consumes the current message without looking at it.
func (r *Reader) Skip() error {
	n := r.bodyLen
	if n < 0 {
		return nil
	}
	r.bodyLen = -1
	if HeaderLen+n <= r.br.w-r.br.r {
		r.br.r += HeaderLen + n
		return nil
	}
	_, err := r.br.discard(HeaderLen + n)
	return unexpected(err)
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// FrontendType reports whether typ is a message type a client may send once logged in: any other
// ends the connection on PostgreSQL ("invalid frontend message type", postgres.c's
// PostgresMain), whatever follows it.
func FrontendType(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'E', 'D', 'C', 'H', 'S', 'F', 'd', 'c', 'f', 'X':
		return true
	}
	return false
}

// AppendHeader appends a message header for a body of bodyLen bytes.
func AppendHeader(dst []byte, typ byte, bodyLen int) []byte {
	dst = append(dst, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(bodyLen+4))
}

// PeekBody returns the first n bytes of the current message's body without consuming it
// (n is capped at the body length). n plus the header must fit in the buffer. The slice is
// only valid until the next call on r.
func (r *Reader) PeekBody(n int) ([]byte, error) {
	if r.bodyLen < 0 {
		panic("wire: PeekBody without Next")
	}
	n = min(n, r.bodyLen, len(r.br.buf)-HeaderLen)
	b := r.br.window()
	if len(b) < HeaderLen+n {
		var err error
		if b, err = r.br.peek(HeaderLen + n); err != nil {
			return nil, unexpected(err)
		}
	}
	return b[HeaderLen : HeaderLen+n], nil
}

// MaxPeek is the most PeekBody can return.
func (r *Reader) MaxPeek() int { return r.br.Size() - HeaderLen }

// ForwardReplacing consumes the current message and writes it to w with its first skip body
// bytes replaced by prefix (the length in the header adjusted), streaming the rest as Forward does.
func (r *Reader) ForwardReplacing(w *bufio.Writer, skip int, prefix []byte) error {
	n := r.bodyLen
	if n < 0 {
		panic("wire: ForwardReplacing without Next")
	}
	if skip > n {
		panic("wire: ForwardReplacing skips past the body")
	}
	w.Write(AppendHeader(w.AvailableBuffer(), r.typ, n-skip+len(prefix)))
	w.Write(prefix)
	if _, err := r.br.Discard(HeaderLen + skip); err != nil {
		r.bodyLen = -1
		return unexpected(err)
	}
	// What is left is a message of type typ with a body of n-skip bytes, minus its header:
	// stream it with Forward's loop.
	r.bodyLen = -1
	return r.stream(w, n-skip)
}
