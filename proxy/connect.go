package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/route"
)

// Timeouts of a terminated CONNECT tunnel; the requests inside it get the
// same header, idle and size limits as the plain listener (serverLimits).
const (
	tunnelHandshakeTimeout = 10 * time.Second
	readHeaderTimeout      = 10 * time.Second
	idleTimeout            = 120 * time.Second
	maxHeaderBytes         = 64 << 10
)

// connector terminates CONNECT tunnels to intercepting routes and serves
// the decrypted requests through the same pipeline as plain HTTP.
type connector struct {
	s   *Server
	gw  *route.ProxyListener
	fwd http.Handler

	mu      sync.Mutex
	closed  bool
	tunnels map[*http.Server]struct{}
}

// forwardHandler is the proxy listener's handler: CONNECT goes to the
// connector when a route intercepts, everything else to the forward proxy.
func (s *Server) forwardHandler() http.Handler {
	fwd := newForwardHandler(s.pipe, s.hosts)
	gw := s.opts.ProxyListener
	if gw == nil || gw.Interceptor == nil {
		return fwd
	}
	c := &connector{s: s, gw: gw, fwd: fwd, tunnels: map[*http.Server]struct{}{}}
	s.connector = c
	return c
}

func (c *connector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		c.fwd.ServeHTTP(w, r)
		return
	}
	p := c.s.pipe
	hosts := c.s.hosts()
	rt, host := hosts.match(r.Host)
	t, err := c.gw.Interceptor.Leaves.Open(r.Host, func(h string) bool {
		return rt != nil && rt.Intercept && c.gw.Intercepts(h)
	})
	if err != nil {
		// Not an intercepting route: refused, never a blind tunnel.
		writeResponse(w, p.refuseConnect(r, hosts, true)) //nolint:bodyclose // writeResponse closes the body
		return
	}
	if ports := connectPorts(rt); !slices.Contains(ports, t.Port) {
		c.gw.Refused(t.Host, intercept.ReasonPortRefused)
		writeResponse(w, p.errorResponse(r, &apiError{Status: http.StatusForbidden, Code: CodeConnectPortRefused, //nolint:bodyclose // writeResponse closes the body
			Message: fmt.Sprintf("route %s intercepts CONNECT to %s only on port %s, not %s", rt.Name, quoteHost(host), strings.Join(ports, " or "), t.Port)}, rt.Name))
		return
	}
	caller, denied := rt.Authorize(r)
	if denied != nil {
		c.gw.Refused(t.Host, route.ReasonCallerRefused)
		writeResponse(w, p.errorResponse(r, deniedError(denied), rt.Name)) //nolint:bodyclose // writeResponse closes the body
		return
	}
	if !rt.Ready() {
		writeResponse(w, p.errorResponse(r, &apiError{Status: http.StatusServiceUnavailable, Code: CodeNoCredentials, //nolint:bodyclose // writeResponse closes the body
			Message: "the route's client certificate is not loaded yet"}, rt.Name))
		return
	}
	ln := newOneConnListener()
	inner := c.tunnelServer(t, rt, caller, ln)
	if !c.track(inner) {
		writeResponse(w, p.errorResponse(r, &apiError{Status: http.StatusServiceUnavailable, Code: CodeShuttingDown, //nolint:bodyclose // writeResponse closes the body
			Message: "tokenproxy is shutting down; retry on another instance"}, rt.Name))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.untrack(inner)
		p.log.Warn("CONNECT: taking over the connection failed", zap.String("host", host), zap.Error(err))
		return
	}
	go c.serveTunnel(inner, ln, t, &bufferedConn{Conn: conn, r: brw.Reader}, host, rt.Name, caller)
}

// hosts is the served table's routes by host.
func (s *Server) hosts() router { return s.table.Load().hosts }

// connectPorts are the ports a CONNECT to route rt's hosts may name: 443,
// the port of an https:// URL without one, and the port of the route's
// upstream when it names another. Any other port would reach the same
// upstream under a URL the app did not mean.
func connectPorts(rt *route.Route) []string {
	ports := []string{"443"}
	if p := rt.Upstream.Port(); p != "" && p != "443" {
		ports = append(ports, p)
	}
	return ports
}

// serveTunnel answers 200, terminates the app's TLS with a certificate for
// the CONNECT host only, and serves the requests read from it.
func (c *connector) serveTunnel(inner *http.Server, ln *oneConnListener, t *intercept.Tunnel, conn net.Conn, host, routeName, caller string) {
	defer c.untrack(inner)
	log := c.s.pipe.log.With(zap.String("route", routeName), zap.String("host", host))
	if caller != "" {
		log = log.With(zap.String("caller", caller))
	}
	_ = conn.SetDeadline(time.Now().Add(tunnelHandshakeTimeout))
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		conn.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tunnelHandshakeTimeout)
	tc, err := t.Handshake(ctx, conn)
	cancel()
	if err != nil {
		// A refusal (no TLS, another server name, no certificate) is the
		// app's or the operator's to fix; the bytes received are never logged.
		if re, ok := errors.AsType[*intercept.RefusedError](err); ok {
			log.Warn("CONNECT tunnel refused", zap.String("reason", string(re.Reason)), zap.Error(err))
		} else {
			log.Debug("CONNECT tunnel: the app's TLS handshake failed", zap.Error(err))
		}
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	ln.give(tc)
	log.Debug("CONNECT tunnel intercepted")
	// The decrypted connection gets the plain listeners' hardening: a
	// request framed by both Content-Length and Transfer-Encoding closes the
	// tunnel after its answer, and a reader that stalls is cut off.
	_ = inner.Serve(hardenConns(inner, ln, false))
	if !ln.taken.Load() {
		tc.Close() // shut down before the connection was served
	}
}

// tunnelServer is a real http.Server for one tunnel's connection, so its
// requests get the plain listener's header timeout, idle timeout, header
// limit, keep-alive and Connection: close handling.
func (c *connector) tunnelServer(t *intercept.Tunnel, rt *route.Route, caller string, ln *oneConnListener) *http.Server {
	p := c.s.pipe
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Scheme, r.URL.Host = "https", r.Host
		if err := t.Check(r); err != nil {
			writeResponse(w, p.errorResponse(r, &apiError{Status: http.StatusForbidden, Code: CodeConnectRefused, //nolint:bodyclose // writeResponse closes the body
				Message: err.Error() + "; a tunnel serves only the host it was opened to", cause: err}, rt.Name))
			return
		}
		// The route of the tunnel's host when the request arrives: a reload
		// may have replaced the one the tunnel was opened to, or removed it.
		cur, _ := c.s.hosts().match(t.Host)
		if cur == nil || !cur.Intercept {
			writeResponse(w, p.handle(r, nil, t.Host)) //nolint:bodyclose // writeResponse closes the body
			return
		}
		defer cur.Begin()()
		writeResponse(w, p.handle(r, cur, t.Host)) //nolint:bodyclose // writeResponse closes the body
	})
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          StdLog(c.s.log.Named("tunnel")),
		BaseContext: func(net.Listener) context.Context {
			return route.WithTunnelCaller(context.Background(), caller)
		},
		// The one connection ending ends Serve.
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				ln.Close()
			}
		},
	}
}

func (c *connector) track(s *http.Server) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.tunnels[s] = struct{}{}
	return true
}

func (c *connector) untrack(s *http.Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tunnels, s)
}

// shutdown drains every tunnel like the listeners: idle connections close
// at once, requests in flight get until ctx ends, then the rest are closed.
// No tunnel is accepted afterwards.
func (c *connector) shutdown(ctx context.Context) {
	c.mu.Lock()
	c.closed = true
	list := make([]*http.Server, 0, len(c.tunnels))
	for s := range c.tunnels {
		list = append(list, s)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range list {
		wg.Go(func() {
			if err := s.Shutdown(ctx); err != nil {
				s.Close()
			}
		})
	}
	wg.Wait()
}

// bufferedConn reads first what the server had already buffered (a
// ClientHello sent right behind the CONNECT).
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	ch    chan net.Conn
	done  chan struct{}
	once  sync.Once
	taken atomic.Bool
	addr  atomic.Value // net.Addr of the connection given
}

func newOneConnListener() *oneConnListener {
	return &oneConnListener{ch: make(chan net.Conn, 1), done: make(chan struct{})}
}

// give makes conn the connection Accept returns.
func (l *oneConnListener) give(conn net.Conn) {
	l.addr.Store(conn.LocalAddr())
	l.ch <- conn
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		l.taken.Store(true)
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr {
	if a, ok := l.addr.Load().(net.Addr); ok {
		return a
	}
	return &net.TCPAddr{}
}

// serve serves one listener; the proxy listener speaks TLS when
// listen.proxy_tls is set. TLS wraps the listener as it is served, so that
// any wrapping of the accepted connections stays inside it and requests
// still carry their TLS state (the caller's client certificate).
func (s *Server) serve(ns *namedServer) error {
	if pl := s.opts.ProxyListener; ns.name == "proxy" && pl != nil && pl.ListenerTLS != nil {
		ns.srv.TLSConfig = pl.ListenerTLS
		// HTTP/1.1 only: CONNECT tunnels need it, and ServeTLS would offer h2.
		ns.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		return ns.srv.ServeTLS(ns.ln, "", "")
	}
	return ns.srv.Serve(ns.ln)
}
