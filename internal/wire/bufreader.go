package wire

import (
	"bufio"
	"errors"
	"io"
)

// BufReader is a buffered reader with the behaviour of bufio.Reader for the methods pgtide
// uses: Peek, Discard, Read, Buffered, Size and Reset, with the same results and errors
// (bufio.ErrBufferFull, bufio.ErrNegativeCount, io.ErrNoProgress), and a read error returned
// once. What it adds is speed where the data path spends it: Reader, which frames every message
// on the client's and the server's side (about twenty Peeks and Discards of bufio.Reader per
// transaction, some fifty instructions each), reads its buffered window directly (window) and
// calls it only when that is short; Peek and Discard take their own common case (enough bytes
// buffered) first, without a loop.
//
// Like bufio.Reader it is owned by one goroutine at a time, and a slice Peek returns is valid
// until the next call that reads or resets.
type BufReader struct {
	buf  []byte
	rd   io.Reader
	r, w int   // buf[r:w] is buffered
	err  error // the last read's error, returned once (readErr)
}

// minBufSize is the smallest buffer NewBufReader makes, as bufio's.
const minBufSize = 16

// maxEmptyReads is how many reads that return nothing and no error fill tolerates before it
// reports io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

var errNegativeRead = errors.New("wire: reader returned negative count from Read")

// NewBufReader returns a BufReader reading rd with a buffer of size bytes (at least 16).
func NewBufReader(rd io.Reader, size int) *BufReader {
	return &BufReader{buf: make([]byte, max(size, minBufSize)), rd: rd}
}

// Size returns the size of the buffer in bytes.
func (b *BufReader) Size() int { return len(b.buf) }

// Buffered returns the number of bytes that can be read from the buffer without reading rd.
func (b *BufReader) Buffered() int { return b.w - b.r }

// window returns what is buffered: a view, valid until the next read. Reader frames messages
// from it directly, consuming by advancing r, and calls peek and discard only when it is short.
func (b *BufReader) window() []byte { return b.buf[b.r:b.w] }

// Reset discards whatever is buffered and any pending error, and makes b read rd.
func (b *BufReader) Reset(rd io.Reader) {
	b.rd = rd
	b.r, b.w = 0, 0
	b.err = nil
}

// Peek returns the next n bytes without advancing the reader, reading rd until they are buffered
// (or the buffer is full, or a read fails). With fewer than n bytes, it returns what there is and
// the read's error, or bufio.ErrBufferFull when n is larger than the buffer.
func (b *BufReader) Peek(n int) ([]byte, error) {
	if uint(n) <= uint(b.w-b.r) {
		return b.buf[b.r : b.r+n], nil
	}
	return b.peek(n)
}

func (b *BufReader) peek(n int) ([]byte, error) {
	if n < 0 {
		return nil, bufio.ErrNegativeCount
	}
	for b.w-b.r < n && b.w-b.r < len(b.buf) && b.err == nil {
		b.fill()
	}
	if n > len(b.buf) {
		return b.buf[b.r:b.w], bufio.ErrBufferFull
	}
	var err error
	if avail := b.w - b.r; avail < n {
		n = avail
		if err = b.readErr(); err == nil {
			err = bufio.ErrBufferFull
		}
	}
	return b.buf[b.r : b.r+n], err
}

// Discard skips the next n bytes, reading rd as needed, and returns how many it skipped: fewer
// than n only with the read error that stopped it.
func (b *BufReader) Discard(n int) (int, error) {
	if uint(n) <= uint(b.w-b.r) {
		b.r += n
		return n, nil
	}
	return b.discard(n)
}

func (b *BufReader) discard(n int) (int, error) {
	if n < 0 {
		return 0, bufio.ErrNegativeCount
	}
	remain := n
	for {
		skip := b.w - b.r
		if skip == 0 {
			b.fill()
			skip = b.w - b.r
		}
		skip = min(skip, remain)
		b.r += skip
		remain -= skip
		if remain == 0 {
			return n, nil
		}
		if b.err != nil {
			return n - remain, b.readErr()
		}
	}
}

// Read reads into p from the buffer, or with at most one read of rd when the buffer is empty
// (into p itself if p is at least as large as the buffer).
func (b *BufReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		if b.w > b.r {
			return 0, nil
		}
		return 0, b.readErr()
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		if len(p) >= len(b.buf) {
			n, err := b.rd.Read(p)
			if n < 0 {
				panic(errNegativeRead)
			}
			return n, err
		}
		b.r, b.w = 0, 0
		n, err := b.rd.Read(b.buf)
		if n < 0 {
			panic(errNegativeRead)
		}
		b.err = err
		if n == 0 {
			return 0, b.readErr()
		}
		b.w = n
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// fill moves what is buffered to the front and reads rd once into the rest (retrying reads that
// return nothing, up to maxEmptyReads).
func (b *BufReader) fill() {
	if b.r > 0 {
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
	for range maxEmptyReads {
		n, err := b.rd.Read(b.buf[b.w:])
		if n < 0 {
			panic(errNegativeRead)
		}
		b.w += n
		if err != nil {
			b.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	b.err = io.ErrNoProgress
}

func (b *BufReader) readErr() error {
	err := b.err
	b.err = nil
	return err
}
