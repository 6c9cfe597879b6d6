package route

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"net/textproto"
	"sync/atomic"

	"github.com/tokenproxy/tokenproxy/internal/httpscan"
)

// ambiguousHeader is the header an upstream connection adds to a response
// whose header block carried both Content-Length and Transfer-Encoding
// (see upstreamConn). Its name is random per process, so an upstream cannot
// send it itself.
var ambiguousHeader = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return textproto.CanonicalMIMEHeaderKey("X-Tokenproxy-Framing-" + hex.EncodeToString(b[:]))
}()

// ambiguousLines is what upstreamConn inserts before the empty line that
// ends such a header block: "Connection: close" makes the transport close
// the connection once the response has been read, so it is never reused
// (RFC 9112 section 6.3), and ambiguousHeader tells the proxy.
var ambiguousLines = []byte("Connection: close\r\n" + ambiguousHeader + ": 1\r\n")

// TakeAmbiguousFraming reports whether the upstream's response header block
// carried both Content-Length and Transfer-Encoding, and removes the mark.
// net/http has then dropped the Content-Length and framed the body by
// Transfer-Encoding, and the connection is closed after this response.
func TakeAmbiguousFraming(h http.Header) bool {
	if _, ok := h[ambiguousHeader]; !ok {
		return false
	}
	delete(h, ambiguousHeader)
	return true
}

// upstreamConn is a connection to an upstream, after TLS. It scans the
// header blocks of the responses read from it for both Content-Length and
// Transfer-Encoding (net/http drops the Content-Length silently) and then
// inserts ambiguousLines into the block. Only header blocks are scanned, so
// bodies cost nothing: writing a request arms the scanner for the next
// bytes read, the end of a final (not 1xx) header block disarms it. While
// it scans, reads go through a buffer of its own, so that the lines can be
// inserted before the block's empty line however the bytes were split.
type upstreamConn struct {
	net.Conn
	// armed is set by Write when a request starts: the transport's reader
	// may already wait in Read (for the next response), so it is atomic.
	armed atomic.Bool

	// The rest belongs to Read (the transport's one reader).
	scanning bool
	buf      []byte // what the last scanned read returned
	ins      []byte // buf with the lines inserted, when they were
	out      []byte // scanned bytes still to be returned
	outErr   error  // the error of the read whose bytes are in out
	held     bool   // a '\r' that may start the empty line is held back
	block    httpscan.Block
	status   bool // the next line is a status line
	interim  bool // the block is a 1xx response's
}

func newUpstreamConn(c net.Conn) *upstreamConn {
	return &upstreamConn{Conn: c, scanning: true, status: true}
}

// ConnectionState reports the TLS state, so that net/http sets Response.TLS.
func (c *upstreamConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// Write arms the scanner when p starts a request: the transport writes a
// request's line at the start of a write, and the next request on a
// connection only once the previous response has been read. A request
// body's later writes do not arm it, even while its response is read.
func (c *upstreamConn) Write(p []byte) (int, error) {
	if startsRequest(p) {
		c.armed.Store(true)
	}
	return c.Conn.Write(p)
}

// startsRequest reports whether p starts with a request line: a method, a
// space and, before the line's end, " HTTP/1.".
func startsRequest(p []byte) bool {
	sp := bytes.IndexByte(p[:min(len(p), 16)], ' ')
	if sp <= 0 {
		return false
	}
	for _, ch := range p[:sp] {
		if ch <= ' ' || ch >= 0x7f {
			return false
		}
	}
	end := bytes.IndexByte(p[sp:], '\n')
	return end > 0 && bytes.Contains(p[sp:sp+end], []byte(" HTTP/1."))
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 && c.outErr == nil {
		if !c.scanning {
			n, err := c.Conn.Read(p)
			if n == 0 || !c.armed.Load() {
				return n, err
			}
			// The first bytes of the answer to a request just written.
			c.scanning, c.status, c.interim = true, true, false
			c.block.Reset()
			c.armed.Store(false)
			c.buf = append(c.buf[:0], p[:n]...)
			c.process(0, err)
			continue
		}
		c.fill()
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) > 0 {
		return n, nil
	}
	err := c.outErr
	c.outErr = nil
	return n, err
}

// fill reads the next bytes into buf and scans them.
func (c *upstreamConn) fill() {
	if cap(c.buf) < 4<<10 {
		c.buf = make([]byte, 4<<10)
	}
	c.buf = c.buf[:cap(c.buf)]
	off := 0
	if c.held {
		// Already scanned: the scanner's line holds it.
		c.buf[0], off, c.held = '\r', 1, false
	}
	n, err := c.Conn.Read(c.buf[off:])
	c.armed.Store(false) // this request's answer is being read
	c.buf = c.buf[:off+n]
	c.process(off, err)
}

// process scans buf[off:] and sets out.
func (c *upstreamConn) process(off int, err error) {
	b := c.buf
	c.outErr = err
	switch k := c.scan(b[off:], off); {
	case k >= 0:
		c.ins = append(append(append(c.ins[:0], b[:k]...), ambiguousLines...), b[k:]...)
		c.out = c.ins
	case err == nil && c.scanning && c.block.PendingCR() && c.block.CL && c.block.TE:
		// What may be the start of the empty line ends the read: hold it
		// back, so the lines can still go before it.
		c.held = true
		c.out = b[:len(b)-1]
	default:
		c.out = b
	}
}

// scan scans b, which starts at p[off], and returns the index in p of the
// empty line that ends an ambiguous header block, or -1.
func (c *upstreamConn) scan(b []byte, off int) int {
	for i, ch := range b {
		line, n, ended := c.block.Add(ch)
		switch {
		case !ended:
		case c.status:
			c.status = false
			// "HTTP/1.1 1xx", but not 101: after 101 the connection is no longer HTTP.
			c.interim = len(line) >= 12 && line[9] == '1' && string(line[9:12]) != "101"
		case httpscan.Blank(line, n):
			start := off + i - n
			// A 1xx response has no body: its framing fields mean nothing.
			ambiguous := c.block.End() && !c.interim
			if c.interim {
				c.status = true
			} else {
				c.scanning = false
			}
			if ambiguous {
				return start // never < 0: a lone '\r' is held back
			}
			if !c.scanning {
				return -1
			}
		default:
			c.block.Field(line)
		}
	}
	return -1
}
