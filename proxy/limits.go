package proxy

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
)

// Limits every listener applies to the connections of apps (docs/limits.md).
// They are variables only so that tests can shorten them.
var (
	// gatewayMaxConns caps the connections one listener holds open at once
	// in gateway mode (listen.allow_non_loopback); further connections wait
	// in the kernel's accept queue until one closes.
	gatewayMaxConns = 1024
	// writeStallTimeout is how long one write to an app may make no
	// progress (an app that stopped reading) before its connection is
	// dropped. Waiting for the upstream is not a write: a slow upstream or
	// a quiet stream is unaffected.
	writeStallTimeout = 60 * time.Second
)

// hardenConns wraps ln and srv so that every accepted connection is watched
// for ambiguous framing (closed after its answer) and has its writes bounded,
// and, in gateway mode, so that ln holds at most gatewayMaxConns connections.
func hardenConns(srv *http.Server, ln net.Listener, gateway bool) net.Listener {
	if gateway {
		ln = netutil.LimitListener(ln, gatewayMaxConns)
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if fc, ok := c.(*framingConn); ok {
			return context.WithValue(ctx, framingConnKey{}, fc)
		}
		return ctx
	}
	srv.Handler = closeAmbiguous(srv.Handler)
	return &framingListener{Listener: ln}
}

type framingConnKey struct{}

// closeAmbiguous answers a request read from a connection on which a header
// block carried both Content-Length and Transfer-Encoding with
// "Connection: close": RFC 9112 section 6.3 says such a connection must not
// be reused, since a peer may have framed the message differently.
// net/http drops the Content-Length before a handler runs, so the raw bytes
// are what tells.
func closeAmbiguous(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fc, ok := r.Context().Value(framingConnKey{}).(*framingConn); ok && fc.ambiguous.Load() {
			w.Header().Set("Connection", "close")
			r.Close = true
		}
		h.ServeHTTP(w, r)
	})
}

type framingListener struct{ net.Listener }

func (l *framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{Conn: c}, nil
}

// framingConn scans what an app sends for header blocks (lines up to an
// empty line) naming both Content-Length and Transfer-Encoding. It does not
// follow message framing: body bytes are scanned too, so a body can only
// add a false alarm (the connection closes after its answer), never hide a
// header block, since a header block holds no empty line.
type framingConn struct {
	net.Conn
	ambiguous atomic.Bool

	// Scanner state, touched only by Read (the server's one reader).
	line         [24]byte
	lineLen      int
	hasCL, hasTE bool
}

func (c *framingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.ambiguous.Load() {
		c.scan(p[:n])
	}
	return n, err
}

// Write bounds each write by writeStallTimeout, so an app that stopped
// reading cannot hold a handler (and its upstream connection) forever.
func (c *framingConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(writeStallTimeout)) //nolint:errcheck // a closed connection fails the write below
	return c.Conn.Write(p)
}

func (c *framingConn) scan(b []byte) {
	for _, ch := range b {
		if ch != '\n' {
			if c.lineLen < len(c.line) {
				c.line[c.lineLen] = lower(ch)
			}
			c.lineLen++
			continue
		}
		line := c.line[:min(c.lineLen, len(c.line))]
		switch {
		case c.lineLen == 0 || (c.lineLen == 1 && c.line[0] == '\r'):
			if c.hasCL && c.hasTE {
				c.ambiguous.Store(true)
			}
			c.hasCL, c.hasTE = false, false
		case hasFieldName(line, "content-length"):
			c.hasCL = true
		case hasFieldName(line, "transfer-encoding"):
			c.hasTE = true
		}
		c.lineLen = 0
	}
}

// hasFieldName reports whether line starts with name followed by optional
// blanks and a colon (blanks before the colon are invalid, but a lenient
// peer might accept them).
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
