package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
	"github.com/tokenproxy/tokenproxy/route"
)

var timeNow = time.Now

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Options configure a Server: its listeners and what it reports to.
type Options struct {
	Log *zap.Logger
	// ProxyAddr is the forward proxy's address; "" or "off" binds none.
	ProxyAddr string
	// AdminAddr is the admin listener's address; "" or "off" binds none.
	AdminAddr string
	// ShutdownGrace is how long Serve waits for in-flight requests.
	ShutdownGrace time.Duration
	// ExpiryWarning logs a warning for any held certificate that expires
	// within it (at start-up and hourly); 0 turns the warning off.
	ExpiryWarning time.Duration
	// ConsentAddr is the consent API's address; "" or "off" binds none.
	ConsentAddr string
	// Consents, when set, is the consent API served on ConsentAddr (assemble.ConsentHandler).
	Consents http.Handler
	// Jobs run alongside the listeners until the server stops (the consent census).
	Jobs []func(context.Context)
	// Observer receives per-request events (metrics); may be nil.
	Observer Observer
	// Admin, when set, is served on the admin listener; it receives the
	// Server so it can report readiness.
	Admin func(*Server) http.Handler
	// Gateway is true when the listeners accept connections beyond loopback
	// (listen.allow_non_loopback): each non-admin listener is then capped
	// in concurrent connections.
	Gateway bool
	// Degraded, when set, reports a dependency that is down while the
	// server still serves on what it holds (Vault unreachable): /readyz says so.
	Degraded func() error
	// TracerProvider, when set, opens a server span per request (continuing
	// the app's traceparent) with child spans down the request; nil traces nothing.
	TracerProvider trace.TracerProvider
	// ProxyListener, when set, terminates CONNECT tunnels to intercepting routes
	// and makes the proxy listener an HTTPS proxy (assemble.BuildProxyListener).
	ProxyListener *route.ProxyListener
}

// Server runs tokenproxy's listeners: the forward proxy, each route's local
// port, and the admin endpoint.
type Server struct {
	log    *zap.Logger
	routes []*route.Route
	pipe   *pipeline
	opts   Options

	draining  atomic.Bool
	connector *connector // nil when no route intercepts
	mu        sync.Mutex
	servers   []*namedServer
}

type namedServer struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

// New returns a Server for built routes (see package route), ready to Listen.
func New(routes []*route.Route, opts Options) *Server {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	s := &Server{log: opts.Log, opts: opts, routes: routes, pipe: newPipeline(opts.Log, opts.Observer)}
	if opts.TracerProvider != nil {
		s.pipe.tracer = opts.TracerProvider.Tracer(tracing.Scope)
	}
	return s
}

// Routes returns the routes served.
func (s *Server) Routes() []*route.Route { return s.routes }

// Route returns the route named name, or nil.
func (s *Server) Route(name string) *route.Route {
	for _, r := range s.routes {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Ready reports whether every route has its credentials and the server is not draining.
func (s *Server) Ready() (bool, string) {
	if s.draining.Load() {
		return false, "draining"
	}
	for _, r := range s.routes {
		if !r.Ready() {
			return false, "route " + r.Name + " has no client certificate"
		}
	}
	if s.opts.Degraded != nil {
		if err := s.opts.Degraded(); err != nil {
			// Still ready: the last good material keeps serving until it expires.
			return true, "degraded: " + err.Error()
		}
	}
	return true, "ok"
}

// Listen binds every configured listener. Addresses ending in :0 get a free
// port; Addr reports it.
func (s *Server) Listen() error {
	rt := router{}
	for _, r := range s.routes {
		for _, h := range r.Hosts {
			rt[h] = r
		}
	}
	bind := func(name, addr string, h http.Handler) error {
		if addr == "" || addr == "off" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listening on %s for %s: %w", addr, name, err)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          StdLog(s.log.Named("http")),
		}
		ln = hardenConns(srv, ln, s.opts.Gateway && name != "admin")
		s.mu.Lock()
		s.servers = append(s.servers, &namedServer{name: name, srv: srv, ln: ln})
		s.mu.Unlock()
		return nil
	}
	if err := bind("proxy", s.opts.ProxyAddr, s.forwardHandler(rt)); err != nil {
		return s.closeAfter(err)
	}
	for _, r := range s.routes {
		if err := bind("route "+r.Name, r.Listen, newLocalHandler(s.pipe, r)); err != nil {
			return s.closeAfter(err)
		}
	}
	if err := bindConsents(s.opts, bind); err != nil {
		return s.closeAfter(err)
	}
	if s.opts.Admin != nil {
		if err := bind("admin", s.opts.AdminAddr, s.opts.Admin(s)); err != nil {
			return s.closeAfter(err)
		}
	}
	return nil
}

func (s *Server) closeAfter(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ns := range s.servers {
		ns.ln.Close()
	}
	s.servers = nil
	return err
}

// Addr returns the bound address of a listener: "proxy", "admin" or "route NAME".
func (s *Server) Addr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ns := range s.servers {
		if ns.name == name {
			return ns.ln.Addr().String()
		}
	}
	return ""
}

// Serve serves until ctx is done, then drains: readiness turns false,
// listeners stop accepting, and in-flight requests get up to the configured
// grace to finish.
func (s *Server) Serve(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	var wg sync.WaitGroup
	for _, job := range s.opts.Jobs {
		wg.Go(func() { job(bg) })
	}
	for _, r := range s.routes {
		for _, job := range r.Jobs() {
			wg.Go(func() { job(bg) })
		}
	}
	for _, job := range s.opts.ProxyListener.Jobs() {
		wg.Go(func() { job(bg) })
	}
	wg.Go(func() { s.warnExpiry(bg) })
	errc := make(chan error, len(s.servers))
	s.mu.Lock()
	servers := append([]*namedServer(nil), s.servers...)
	s.mu.Unlock()
	for _, ns := range servers {
		s.log.Info("listening", zap.String("listener", ns.name), zap.String("addr", ns.ln.Addr().String()))
		go func() {
			if err := s.serve(ns); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", ns.name, err)
			}
		}()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.draining.Store(true)
	grace := s.opts.ShutdownGrace
	s.log.Info("draining", zap.Duration("grace", grace))
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// The traffic listeners drain first; the admin listener stays up meanwhile
	// so /readyz can report the drain, and closes last.
	shutdown := func(ns *namedServer) {
		if err := ns.srv.Shutdown(sctx); err != nil {
			s.log.Warn("requests still in flight at the end of the grace period", zap.String("listener", ns.name), zap.Error(err))
			ns.srv.Close()
		}
	}
	var swg sync.WaitGroup
	var admin *namedServer
	for _, ns := range servers {
		if ns.name == "admin" {
			admin = ns
			continue
		}
		swg.Go(func() { shutdown(ns) })
	}
	if s.connector != nil {
		swg.Go(func() { s.connector.shutdown(sctx) })
	}
	swg.Wait()
	if admin != nil {
		shutdown(admin)
	}
	stopBG()
	wg.Wait()
	for _, r := range s.routes {
		r.Transport.CloseIdleConnections()
	}
	s.log.Info("stopped")
	return serveErr
}

// warnExpiry logs a warning, at start-up and then hourly, for every held
// certificate within the configured window of its expiry.
func (s *Server) warnExpiry(ctx context.Context) {
	window := s.opts.ExpiryWarning
	if window <= 0 {
		return
	}
	check := func() {
		now := time.Now()
		n := 0
		for _, r := range s.routes {
			for _, hc := range r.Certificates() {
				c := hc.Holder.Load()
				if c == nil || c.Leaf == nil {
					continue
				}
				n++
				if left := c.Leaf.NotAfter.Sub(now); left < window {
					s.log.Warn("certificate expires soon; rotate it", zap.String("route", r.Name), zap.String("certificate", hc.Kind),
						zap.String("subject", c.Leaf.Subject.String()), zap.Time("not_after", c.Leaf.NotAfter),
						zap.Duration("remaining", left.Round(time.Minute)))
				}
			}
		}
		s.log.Debug("certificate expiry checked", zap.Int("certificates", n), zap.Duration("window", window))
	}
	check()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}
