package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/httpscan"
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
	fl := &framingListener{Listener: ln}
	if gateway {
		fl.slots = make(chan struct{}, gatewayMaxConns)
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if fc, ok := c.(*framingConn); ok {
			return context.WithValue(ctx, framingConnKey{}, fc)
		}
		return ctx
	}
	srv.Handler = screen(srv.Handler)
	return fl
}

type framingConnKey struct{}

// screen runs before either listener's handler. It answers a request read
// from a connection on which a header block carried both Content-Length and
// Transfer-Encoding with "Connection: close": RFC 9112 section 6.3 says such
// a connection must not be reused, since a peer may have framed the message
// differently (net/http drops the Content-Length before a handler runs, so
// the raw bytes are what tells). It refuses an absolute URI with userinfo
// (RFC 9110 section 4.2.4: treat it as an error, it obscures the authority).
func screen(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fc, ok := r.Context().Value(framingConnKey{}).(*framingConn); ok && fc.ambiguous.Load() {
			r.Close = true
			w = &closingWriter{ResponseWriter: w}
		}
		if r.URL.User != nil {
			e := &apiError{Status: http.StatusBadRequest, Code: CodeBadRequest,
				Message: "the request URL carries userinfo (user:password@host); tokenproxy does not accept credentials in URLs"}
			writeResponse(w, e.response(r, "")) //nolint:bodyclose // writeResponse closes the body
			return
		}
		h.ServeHTTP(w, r)
	})
}

// closingWriter adds "Connection: close" to the answer whatever the handler
// did to the header map before writing it: net/http decides whether to close
// from the request as it was read, so setting r.Close in a handler is not
// enough, and a handler copying an answer's headers may overwrite the field.
type closingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *closingWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		w.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closingWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming answers streaming.
func (w *closingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *closingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// framingListener wraps accepted connections in framingConn and, when slots
// is not nil, holds at most cap(slots) of them open: Accept waits for a slot
// (as golang.org/x/net/netutil.LimitListener does, whose connections would
// hide CloseWrite).
type framingListener struct {
	net.Listener
	slots chan struct{}
}

func (l *framingListener) Accept() (net.Conn, error) {
	if l.slots != nil {
		l.slots <- struct{}{}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		return nil, err
	}
	fc := &framingConn{Conn: c}
	if l.slots != nil {
		fc.release = func() { <-l.slots }
	}
	return fc, nil
}

// framingConn scans what an app sends for header blocks (lines up to an
// empty line) naming both Content-Length and Transfer-Encoding. It does not
// follow message framing: body bytes are scanned too, so a body can only
// add a false alarm (the connection closes after its answer), never hide a
// header block, since a header block holds no empty line.
type framingConn struct {
	net.Conn
	ambiguous atomic.Bool
	release   func() // frees the listener's slot; nil without a cap
	closeOnce sync.Once

	// block follows the header blocks; only Read (the server's one reader) touches it.
	block httpscan.Block
}

func (c *framingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.ambiguous.Load() {
		c.scan(p[:n])
	}
	return n, err
}

// Close closes the connection and frees its slot.
func (c *framingConn) Close() error {
	err := c.Conn.Close()
	if c.release != nil {
		c.closeOnce.Do(c.release)
	}
	return err
}

// Write bounds each write by writeStallTimeout, so an app that stopped
// reading cannot hold a handler (and its upstream connection) forever.
func (c *framingConn) Write(p []byte) (int, error) {
	c.SetWriteDeadline(time.Now().Add(writeStallTimeout)) //nolint:errcheck // a closed connection fails the write below
	return c.Conn.Write(p)
}

// CloseWrite half-closes a TCP connection, as net/http does before it drops
// a connection whose request it refused, so that the app reads the answer
// before the reset that unread request bytes cause.
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *framingConn) scan(b []byte) {
	for _, ch := range b {
		line, n, ended := c.block.Add(ch)
		switch {
		case !ended:
		case httpscan.Blank(line, n):
			if c.block.End() {
				c.ambiguous.Store(true)
			}
		default:
			c.block.Field(line)
		}
	}
}
