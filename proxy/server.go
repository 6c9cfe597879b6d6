package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
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
// port, and the admin endpoint. It serves a table of routes that Swap
// replaces in one store: a request keeps the route it found.
type Server struct {
	log   *zap.Logger
	table atomic.Pointer[table]
	pipe  *pipeline
	opts  Options

	draining  atomic.Bool
	connector *connector // nil when no route intercepts
	swapMu    sync.Mutex // one Swap at a time, none once draining

	mu      sync.Mutex // guards what follows
	servers []*namedServer
	serving bool                                // Serve runs: new listeners and jobs start at once
	bg      context.Context                     // the jobs' context while serving
	running map[*route.Route]context.CancelFunc // stops a served route's jobs
	errc    chan error
	jobs    sync.WaitGroup
	retired sync.WaitGroup // routes and listeners a Swap replaced, draining
}

// table is the routes served, by host and by name.
type table struct {
	routes []*route.Route
	hosts  router
	names  map[string]*route.Route
}

func newTable(routes []*route.Route) *table {
	t := &table{routes: routes, hosts: router{}, names: map[string]*route.Route{}}
	for _, r := range routes {
		t.names[r.Name] = r
		for _, h := range r.Hosts {
			t.hosts[h] = r
		}
	}
	return t
}

type namedServer struct {
	name string
	addr string // as configured (a :0 port differs from ln's)
	srv  *http.Server
	ln   net.Listener
}

// New returns a Server for built routes (see package route), ready to Listen.
func New(routes []*route.Route, opts Options) *Server {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	s := &Server{log: opts.Log, opts: opts, pipe: newPipeline(opts.Log, opts.Observer), running: map[*route.Route]context.CancelFunc{}}
	s.table.Store(newTable(routes))
	if opts.TracerProvider != nil {
		s.pipe.tracer = opts.TracerProvider.Tracer(tracing.Scope)
	}
	return s
}

// Routes returns the routes served now.
func (s *Server) Routes() []*route.Route { return s.table.Load().routes }

// Route returns the route named name, or nil.
func (s *Server) Route(name string) *route.Route { return s.table.Load().names[name] }

// Ready reports whether every route has its credentials and the server is not draining.
func (s *Server) Ready() (bool, string) {
	if s.draining.Load() {
		return false, "draining"
	}
	for _, r := range s.Routes() {
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
	bind := func(name, addr string, h http.Handler) error {
		ns, err := s.listen(name, addr, h)
		if err != nil || ns == nil {
			return err
		}
		s.mu.Lock()
		s.servers = append(s.servers, ns)
		s.mu.Unlock()
		return nil
	}
	if err := bind("proxy", s.opts.ProxyAddr, s.forwardHandler()); err != nil {
		return s.closeAfter(err)
	}
	for _, r := range s.Routes() {
		if err := bind(localName(r.Name), r.Listen, s.localHandler(r.Name)); err != nil {
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

// localName names a route's local listener.
func localName(route string) string { return "route " + route }

// listen binds addr for h; nil (and no error) for "" or "off".
func (s *Server) listen(name, addr string, h http.Handler) (*namedServer, error) {
	if addr == "" || addr == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for %s: %w", addr, name, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          StdLog(s.log.Named("http")),
	}
	ln = hardenConns(srv, ln, s.opts.Gateway && name != "admin")
	return &namedServer{name: name, addr: addr, srv: srv, ln: ln}, nil
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
	s.mu.Lock()
	s.bg, s.serving, s.errc = bg, true, make(chan error, 1)
	for _, r := range s.Routes() {
		s.startJobsLocked(r)
	}
	servers := append([]*namedServer(nil), s.servers...)
	s.mu.Unlock()
	for _, job := range s.opts.Jobs {
		s.jobs.Go(func() { job(bg) })
	}
	for _, job := range s.opts.ProxyListener.Jobs() {
		s.jobs.Go(func() { job(bg) })
	}
	s.jobs.Go(func() { s.warnExpiry(bg) })
	for _, ns := range servers {
		s.start(ns)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-s.errc:
	}
	// No Swap from here on: the listeners drained are the last ones.
	s.swapMu.Lock()
	s.draining.Store(true)
	s.mu.Lock()
	s.serving = false
	servers = append([]*namedServer(nil), s.servers...)
	s.mu.Unlock()
	s.swapMu.Unlock()
	grace := s.opts.ShutdownGrace
	s.log.Info("draining", zap.Duration("grace", grace))
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// The traffic listeners drain first; the admin listener stays up meanwhile
	// so /readyz can report the drain, and closes last.
	var swg sync.WaitGroup
	var admin *namedServer
	for _, ns := range servers {
		if ns.name == "admin" {
			admin = ns
			continue
		}
		swg.Go(func() { s.shutdown(sctx, ns) })
	}
	if s.connector != nil {
		swg.Go(func() { s.connector.shutdown(sctx) })
	}
	swg.Wait()
	s.retired.Wait()
	if admin != nil {
		s.shutdown(sctx, admin)
	}
	stopBG()
	s.jobs.Wait()
	for _, r := range s.Routes() {
		r.Transport.CloseIdleConnections()
	}
	s.log.Info("stopped")
	return serveErr
}

// start serves ns in its own goroutine; an error other than the server
// closing ends Serve.
func (s *Server) start(ns *namedServer) {
	s.log.Info("listening", zap.String("listener", ns.name), zap.String("addr", ns.ln.Addr().String()))
	go func() {
		if err := s.serve(ns); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case s.errc <- fmt.Errorf("%s listener: %w", ns.name, err):
			default:
			}
		}
	}()
}

// shutdown stops ns accepting and waits for its requests until ctx ends,
// then closes what is left.
func (s *Server) shutdown(ctx context.Context, ns *namedServer) {
	if err := ns.srv.Shutdown(ctx); err != nil {
		s.log.Warn("requests still in flight at the end of the grace period", zap.String("listener", ns.name), zap.Error(err))
		ns.srv.Close()
	}
	_ = ns.ln.Close() // never served (replaced before Serve)
}

// startJobsLocked starts r's background jobs under a context of their own,
// so that a route a Swap replaced stops its jobs alone. s.mu is held.
func (s *Server) startJobsLocked(r *route.Route) {
	if _, ok := s.running[r]; ok {
		return
	}
	ctx, cancel := context.WithCancel(s.bg)
	s.running[r] = cancel
	for _, job := range r.Jobs() {
		s.jobs.Go(func() { job(ctx) })
	}
}

// Swap makes routes the routes served, in one store: a request that found
// its route before keeps it to its end, every later one finds the new
// table. Routes that are in both tables (the same *route.Route) go on
// untouched: their token caches, connections and jobs are theirs. A route
// local listener whose route (by name) keeps its listen address stays; one
// with a new address is bound before the swap, and an error binding it
// changes nothing. After the swap, the listeners no longer configured drain
// (up to the shutdown grace), and the routes no longer served are retired
// once the requests begun on them ended (or the grace passed): their jobs
// stop and their idle upstream connections close.
func (s *Server) Swap(routes []*route.Route) error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	if s.draining.Load() {
		return errors.New("the server is shutting down")
	}
	old := s.table.Load()
	s.mu.Lock()
	have := map[string]*namedServer{}
	for _, ns := range s.servers {
		have[ns.name] = ns
	}
	s.mu.Unlock()
	keep := map[string]bool{}
	var added []*namedServer
	for _, r := range routes {
		name := localName(r.Name)
		if ns := have[name]; ns != nil && ns.addr == r.Listen {
			keep[name] = true
			continue
		}
		ns, err := s.listen(name, r.Listen, s.localHandler(r.Name))
		if err != nil {
			for _, a := range added {
				_ = a.ln.Close()
			}
			return err
		}
		if ns != nil {
			added = append(added, ns)
		}
	}
	nt := newTable(routes)
	s.mu.Lock()
	var drop []*namedServer
	servers := make([]*namedServer, 0, len(s.servers)+len(added))
	for _, ns := range s.servers {
		if strings.HasPrefix(ns.name, localName("")) && !keep[ns.name] {
			drop = append(drop, ns)
			continue
		}
		servers = append(servers, ns)
	}
	s.servers = append(servers, added...)
	s.table.Store(nt)
	serving := s.serving
	if serving {
		for _, r := range routes {
			s.startJobsLocked(r)
		}
	}
	s.mu.Unlock()
	if serving {
		for _, ns := range added {
			s.start(ns)
		}
	}
	var gone []*route.Route
	for _, r := range old.routes {
		if nt.names[r.Name] != r {
			gone = append(gone, r)
		}
	}
	s.retired.Go(func() { s.retire(drop, gone) })
	return nil
}

// retire drains the listeners and routes a Swap replaced.
func (s *Server) retire(listeners []*namedServer, routes []*route.Route) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, ns := range listeners {
		wg.Go(func() { s.shutdown(ctx, ns) })
	}
	wg.Wait()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, r := range routes {
		for r.InFlight() > 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}
	s.mu.Lock()
	for _, r := range routes {
		if stop := s.running[r]; stop != nil {
			stop()
			delete(s.running, r)
		}
	}
	s.mu.Unlock()
	for _, r := range routes {
		r.Transport.CloseIdleConnections()
		if r.Tokens != nil {
			r.Tokens.Close()
		}
		s.log.Debug("route retired", zap.String("route", r.Name), zap.Int64("in_flight", r.InFlight()))
	}
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
		for _, r := range s.Routes() {
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
