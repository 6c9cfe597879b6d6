// Package bankingcircle emulates Banking Circle's API closely enough to test a
// client of it end to end: two HTTPS hosts (the API and the separate
// authorization host) that both demand a client certificate, the authorize
// endpoint with Basic credentials and its string-typed "expires_in", a
// per-IP per-minute throttle on token requests, and GET /api/v1/accounts
// behind a bearer token.
//
// Every failure a client meets in the field can be switched on, at start-up
// through Config or at run time through setters: an IP allowlist (403 naming
// the IP the bank saw), a user without access to accounts (404), forced 429s,
// revoked tokens (401), an untrusted client certificate, slow endpoints, and
// a fault per host (SetTokenFault, SetAPIFault: 429 with or without
// Retry-After, 5xx, slow answers, connection resets, malformed bodies, short
// expires_in, closed kept-alive connections). Counters (Stats), the issued
// tokens, the arrival times of token requests (TokenArrivals), every request
// the API host received (Received) and the client certificate of every TLS
// handshake are recorded for assertions.
//
// The emulator is a test and demo tool. It keeps everything in memory and
// never logs a credential or a token.
package bankingcircle

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Paths served.
const (
	AuthorizePath = "/api/v1/authorizations/authorize"
	AccountsPath  = "/api/v1/accounts"
)

// DefaultTokenTTL is the lifetime of an access token, as the real service
// documents it: 5 minutes.
const DefaultTokenTTL = 300 * time.Second

// DefaultAddr is where Start listens when Config leaves an address empty.
const DefaultAddr = "127.0.0.1:0"

// ThrottleWindow selects how TokenRequestsPerMinute is counted. Banking Circle
// says only that the threshold is "per IP" and "defined on minute basis".
type ThrottleWindow int

const (
	// SlidingWindow (the default) allows at most TokenRequestsPerMinute token
	// requests from one IP in any 60 seconds: a request is refused while
	// that many were accepted in the 60 seconds before it, and Retry-After
	// says when the oldest of them leaves the window. It is the strictest
	// reading of the documentation, and the one a token-bucket limiter must
	// be tuned for: a bucket of rate r per minute and burst b can send b+r
	// requests in one sliding minute.
	SlidingWindow ThrottleWindow = iota
	// FixedWindow counts per calendar minute of the emulator's clock
	// (hh:mm:00 to hh:mm:59) and resets at the minute boundary; Retry-After
	// points at the next minute.
	FixedWindow
)

// String returns "sliding" or "fixed".
func (w ThrottleWindow) String() string {
	switch w {
	case SlidingWindow:
		return "sliding"
	case FixedWindow:
		return "fixed"
	default:
		return fmt.Sprintf("ThrottleWindow(%d)", int(w))
	}
}

// Config describes an emulator. Username and Password are required; so are
// ServerCert and ClientCAs when the emulator opens its own listeners (Start).
// Every failure mode here can also be changed at run time with the matching
// setter.
type Config struct {
	// ServerCert is presented by both hosts. It must be valid for 127.0.0.1
	// (or whatever APIAddr/AuthAddr name) for clients to verify it.
	ServerCert *tls.Certificate
	// ClientCAs verifies client certificates; a handshake without a
	// certificate that chains to it fails (tls.RequireAndVerifyClientCert).
	ClientCAs *x509.CertPool
	// APIAddr and AuthAddr are the listen addresses; empty means
	// DefaultAddr, a free loopback port.
	APIAddr, AuthAddr string

	// Username and Password are the M2M user's credentials, checked against
	// the Basic Authorization header of token requests.
	Username, Password string
	// TokenTTL is the lifetime of issued tokens and the "expires_in" value
	// (whole seconds, as a JSON string). Zero means DefaultTokenTTL.
	TokenTTL time.Duration
	// TokenRequestsPerMinute is the per-client-IP threshold of token
	// requests; past it the authorization host answers 429 with Retry-After.
	// Zero disables the throttle. Refused requests do not count.
	TokenRequestsPerMinute int
	// ThrottleWindow selects sliding (default) or fixed minute windows.
	ThrottleWindow ThrottleWindow

	// AllowedIPs, when not empty, is the source-IP allowlist ("whitelist")
	// of both hosts: IP addresses ("192.0.2.7") or CIDR prefixes
	// ("192.0.2.0/24"). Other sources get 403 ip_not_whitelisted naming
	// their IP.
	AllowedIPs []string
	// NoAccountAccess makes the accounts endpoints answer 404, as for a
	// user that was not granted access to accounts.
	NoAccountAccess bool
	// ThrottleNext forces the next ThrottleNext token requests to answer 429,
	// whatever the threshold, with Retry-After ThrottleRetryAfter (rounded up
	// to whole seconds; no header when zero).
	ThrottleNext       int
	ThrottleRetryAfter time.Duration
	// TokenLatency and APILatency delay every answer of the authorization
	// host and of the API host (a client that gives up early is let go).
	TokenLatency, APILatency time.Duration
	// AuthorizeOnAPIHost also serves the authorize endpoint on the API host.
	// Banking Circle's connection guide names a separate authorization host,
	// while its step-by-step guide calls the endpoint on the API host; by
	// default the emulator follows the former so that a client pointed at
	// the wrong host fails here as it would in production.
	AuthorizeOnAPIHost bool

	// Accounts are the accounts the user sees; nil means DefaultAccounts().
	Accounts []Account
	// Now is the clock for token expiry, throttle windows and recorded
	// times; nil means time.Now.
	Now func() time.Time
	// ErrorLog receives the HTTP servers' errors (failed TLS handshakes and
	// the like); nil discards them.
	ErrorLog *log.Logger
}

// Server is a running (or ready to run) emulator. All methods are safe for
// concurrent use.
type Server struct {
	now      func() time.Time
	accounts []Account
	apiAddr  string
	authAddr string
	srvCert  *tls.Certificate
	errorLog *log.Logger

	apiHandler  http.Handler
	authHandler http.Handler

	// mu guards everything below.
	mu              sync.Mutex
	clientCAs       *x509.CertPool
	username        string
	password        string
	ttl             time.Duration
	perMinute       int
	window          ThrottleWindow
	allowed         []netip.Prefix
	noAccountAccess bool
	forced429       int
	forcedRetry     time.Duration
	tokenLatency    time.Duration
	apiLatency      time.Duration
	tokens          map[string]time.Time // live token -> expiry
	issued          []string
	tokenReqs       []TokenRequest
	sliding         map[netip.Addr][]time.Time // accepted token requests in the last minute
	fixed           map[netip.Addr]fixedCount
	stats           Stats
	handshakes      []Handshake
	tokenFault      Fault
	tokenFaultN     int
	apiFault        Fault
	apiFaultN       int
	arrivals        []time.Time // arrival times of token requests
	arrivalsBy      []TokenArrival
	received        []Received // requests received by the API host

	started bool
	servers []*http.Server
	apiURL  string
	authURL string
}

type fixedCount struct {
	minute time.Time
	n      int
}

// New checks cfg and returns an emulator whose handlers are ready to use;
// call Start to open its listeners.
func New(cfg Config) (*Server, error) {
	if cfg.Username == "" || cfg.Password == "" {
		return nil, errors.New("bankingcircle: Config.Username and Config.Password are required")
	}
	if cfg.TokenTTL < 0 {
		return nil, fmt.Errorf("bankingcircle: Config.TokenTTL %v is negative", cfg.TokenTTL)
	}
	if cfg.TokenRequestsPerMinute < 0 {
		return nil, fmt.Errorf("bankingcircle: Config.TokenRequestsPerMinute %d is negative (0 disables the throttle)", cfg.TokenRequestsPerMinute)
	}
	if cfg.ThrottleWindow != SlidingWindow && cfg.ThrottleWindow != FixedWindow {
		return nil, fmt.Errorf("bankingcircle: unknown Config.ThrottleWindow %d", cfg.ThrottleWindow)
	}
	allowed, err := parseAllowed(cfg.AllowedIPs)
	if err != nil {
		return nil, fmt.Errorf("bankingcircle: Config.AllowedIPs: %w", err)
	}
	s := &Server{
		now:             cfg.Now,
		accounts:        cfg.Accounts,
		apiAddr:         cfg.APIAddr,
		authAddr:        cfg.AuthAddr,
		srvCert:         cfg.ServerCert,
		errorLog:        cfg.ErrorLog,
		clientCAs:       cfg.ClientCAs,
		username:        cfg.Username,
		password:        cfg.Password,
		ttl:             cfg.TokenTTL,
		perMinute:       cfg.TokenRequestsPerMinute,
		window:          cfg.ThrottleWindow,
		allowed:         allowed,
		noAccountAccess: cfg.NoAccountAccess,
		forced429:       max(cfg.ThrottleNext, 0),
		forcedRetry:     cfg.ThrottleRetryAfter,
		tokenLatency:    cfg.TokenLatency,
		apiLatency:      cfg.APILatency,
		tokens:          make(map[string]time.Time),
		sliding:         make(map[netip.Addr][]time.Time),
		fixed:           make(map[netip.Addr]fixedCount),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.accounts == nil {
		s.accounts = DefaultAccounts()
	}
	if s.ttl == 0 {
		s.ttl = DefaultTokenTTL
	}
	if s.apiAddr == "" {
		s.apiAddr = DefaultAddr
	}
	if s.authAddr == "" {
		s.authAddr = DefaultAddr
	}
	if s.errorLog == nil {
		s.errorLog = log.New(io.Discard, "", 0)
	}
	s.stats.HandshakesByFingerprint = map[string]int{}
	s.stats.HandshakesBySerial = map[string]int{}
	s.authHandler = s.newAuthMux()
	s.apiHandler = s.record(s.newAPIMux(cfg.AuthorizeOnAPIHost))
	return s, nil
}

// Start opens the API and authorization listeners and serves them in the
// background until Close.
func (s *Server) Start() error {
	if s.srvCert == nil {
		return errors.New("bankingcircle: Start needs Config.ServerCert")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clientCAs == nil {
		return errors.New("bankingcircle: Start needs Config.ClientCAs")
	}
	if s.started {
		return errors.New("bankingcircle: already started")
	}
	type host struct {
		name    string
		addr    string
		handler http.Handler
		url     *string
	}
	var lns []net.Listener
	for _, h := range []host{
		{HostAPI, s.apiAddr, s.apiHandler, &s.apiURL},
		{HostAuth, s.authAddr, s.authHandler, &s.authURL},
	} {
		ln, err := net.Listen("tcp", h.addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("bankingcircle: listening for the %s host on %s: %w", h.name, h.addr, err)
		}
		lns = append(lns, ln)
		*h.url = "https://" + ln.Addr().String()
		srv := &http.Server{
			Handler:           h.handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          s.errorLog,
		}
		s.servers = append(s.servers, srv)
		tlsLn := tls.NewListener(ln, s.tlsConfigLocked(h.name))
		go srv.Serve(tlsLn) //nolint:errcheck // ends with ErrServerClosed on Close
	}
	s.started = true
	return nil
}

// Close stops both listeners and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// APIURL returns the API host's base URL, "https://127.0.0.1:port", once
// started.
func (s *Server) APIURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiURL
}

// AuthURL returns the authorization host's base URL, once started. The token
// endpoint is AuthURL() + AuthorizePath.
func (s *Server) AuthURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authURL
}

// APIHandler returns the API host's handler, for mounting on a listener of
// the caller's own. The handler does not check client certificates: the
// listener must (see APITLSConfig).
func (s *Server) APIHandler() http.Handler { return s.apiHandler }

// AuthHandler returns the authorization host's handler; see APIHandler.
func (s *Server) AuthHandler() http.Handler { return s.authHandler }

// APITLSConfig returns the TLS configuration Start uses for the API host:
// ServerCert, client certificates required and verified against the current
// client CAs, session tickets disabled (every connection makes a full
// handshake, so rotation is visible), and handshakes recorded in Stats.
func (s *Server) APITLSConfig() *tls.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsConfigLocked(HostAPI)
}

// AuthTLSConfig is APITLSConfig for the authorization host.
func (s *Server) AuthTLSConfig() *tls.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsConfigLocked(HostAuth)
}

func (s *Server) tlsConfigLocked(host string) *tls.Config {
	cfg := s.handshakeConfigLocked(host)
	// The listener's config only dispatches: each ClientHello gets a config
	// built from the current client CAs, so SetClientCAs applies to the next
	// handshake.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stats.ClientHellos++
		return s.handshakeConfigLocked(host), nil
	}
	return cfg
}

func (s *Server) handshakeConfigLocked(host string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              s.clientCAs,
		SessionTicketsDisabled: true,
		NextProtos:             []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				s.recordHandshake(host, cs.PeerCertificates[0], cs.DidResume)
			}
			return nil
		},
	}
	if s.srvCert != nil {
		cfg.Certificates = []tls.Certificate{*s.srvCert}
	}
	return cfg
}
