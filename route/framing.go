package route

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"net/textproto"
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
// inserts ambiguousLines into the block. Only header blocks are scanned: a
// request written re-arms the scanner, the end of a final (not 1xx) header
// block disarms it, so bodies cost nothing.
type upstreamConn struct {
	net.Conn

	// Touched only by Read (the transport's one reader) and Write (its one
	// writer, which writes a request only while no response is being read).
	scanning     bool
	carryCR      bool   // a '\r' held back from the last read (see Read)
	pending      []byte // inserted lines and the bytes after them, still to be returned
	pendingErr   error  // the error of the read whose bytes are pending
	line         [24]byte
	lineLen      int
	status       bool // the next line is a status line
	interim      bool // the block is a 1xx response's
	hasCL, hasTE bool
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

func (c *upstreamConn) Write(p []byte) (int, error) {
	if !c.scanning {
		c.scanning, c.status, c.interim, c.hasCL, c.hasTE, c.lineLen = true, true, false, false, false, 0
	}
	return c.Conn.Write(p)
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) > 0 {
			return n, nil
		}
		err := c.pendingErr
		c.pendingErr = nil
		return n, err
	}
	if !c.scanning || len(p) < 2 {
		return c.Conn.Read(p)
	}
	off := 0
	if c.carryCR {
		// The '\r' that may start the block's empty line, already scanned.
		p[0], off, c.carryCR = '\r', 1, false
	}
	n, err := c.Conn.Read(p[off:])
	n += off
	k := c.scan(p[off:n], off)
	switch {
	case k >= 0:
		// p[k:n] starts with the empty line of an ambiguous block: return
		// what comes before it, then the inserted lines, then the rest.
		c.pending = append(append(c.pending[:0], ambiguousLines...), p[k:n]...)
		c.pendingErr = err
		if k > 0 {
			return k, nil
		}
		m := copy(p, c.pending)
		c.pending = c.pending[m:]
		return m, nil
	case err == nil && n > 0 && c.lineLen == 1 && c.line[0] == '\r' && c.hasCL && c.hasTE:
		// The read ends on what may be the start of the empty line; hold
		// the '\r' back so the lines can still be inserted before it.
		c.carryCR = true
		return n - 1, nil
	}
	return n, err
}

// scan scans b, which starts at p[off], and returns the index in p of the
// empty line that ends an ambiguous header block, or -1.
func (c *upstreamConn) scan(b []byte, off int) int {
	for i, ch := range b {
		if ch != '\n' {
			if c.lineLen < len(c.line) {
				c.line[c.lineLen] = lower(ch)
			}
			c.lineLen++
			continue
		}
		line := c.line[:min(c.lineLen, len(c.line))]
		switch {
		case c.status:
			c.status = false
			// "HTTP/1.1 1xx", but not 101: after 101 the connection is no longer HTTP.
			c.interim = len(line) >= 12 && line[9] == '1' && string(line[9:12]) != "101"
		case c.lineLen == 0 || (c.lineLen == 1 && c.line[0] == '\r'):
			start := off + i - c.lineLen
			// A 1xx response has no body: its framing fields mean nothing.
			ambiguous := c.hasCL && c.hasTE && !c.interim
			c.hasCL, c.hasTE, c.lineLen = false, false, 0
			if c.interim {
				c.status = true
			} else {
				c.scanning = false
			}
			if ambiguous {
				if start < 0 {
					return 0 // cannot happen: a lone '\r' is carried over
				}
				return start
			}
			if !c.scanning {
				return -1
			}
			continue
		case hasFieldName(line, "content-length"):
			c.hasCL = true
		case hasFieldName(line, "transfer-encoding"):
			c.hasTE = true
		}
		c.lineLen = 0
	}
	return -1
}

// hasFieldName reports whether line starts with name followed by optional
// blanks and a colon.
func hasFieldName(line []byte, name string) bool {
	if len(line) <= len(name) || string(line[:len(name)]) != name {
		return false
	}
	for _, ch := range line[len(name):] {
		switch ch {
		case ':':
			return true
		case ' ', '\t':
		default:
			return false
		}
	}
	return false
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
