package bankingcircle

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// FaultKind names one way an endpoint can misbehave.
type FaultKind int

const (
	// FaultNone answers normally.
	FaultNone FaultKind = iota
	// FaultStatus answers Fault.Status with the emulator's JSON error body;
	// a 429 carries Retry-After Fault.RetryAfter (rounded up to whole
	// seconds; no header when zero).
	FaultStatus
	// FaultSlow waits Fault.Delay, then answers normally (a client that
	// gives up first gets no answer).
	FaultSlow
	// FaultReset closes the TCP connection with a reset (SO_LINGER 0)
	// without answering.
	FaultReset
	// FaultMalformed answers 200 with a truncated JSON body (token endpoint)
	// or a body shorter than its Content-Length (API endpoints).
	FaultMalformed
	// FaultShortExpiry issues a real token that expires after Fault.Expiry
	// (token endpoint only; ignored on the API host).
	FaultShortExpiry
	// FaultCloseConn answers normally with "Connection: close", so a
	// kept-alive connection ends after the answer.
	FaultCloseConn
)

// String names the kind, for logs and reports.
func (k FaultKind) String() string {
	switch k {
	case FaultNone:
		return "none"
	case FaultStatus:
		return "status"
	case FaultSlow:
		return "slow"
	case FaultReset:
		return "reset"
	case FaultMalformed:
		return "malformed"
	case FaultShortExpiry:
		return "short-expiry"
	case FaultCloseConn:
		return "close-conn"
	default:
		return "FaultKind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Fault is the behaviour an endpoint shows until the next SetTokenFault or
// SetAPIFault. The zero Fault means none.
type Fault struct {
	Kind       FaultKind
	Status     int           // FaultStatus: the status answered (500, 503, 429...)
	RetryAfter time.Duration // FaultStatus 429: Retry-After; zero sends none
	Delay      time.Duration // FaultSlow
	Expiry     time.Duration // FaultShortExpiry: the issued token's lifetime (≥ 1 s on the wire)
	// Every applies the fault to one request in Every (counted per
	// endpoint from the SetXFault call); 0 and 1 mean every request.
	Every int
}

// Received is one request as it arrived at the API host, before any check:
// what a client (or a proxy in front of it) actually put on the wire.
type Received struct {
	Time             time.Time
	Method           string
	RequestURI       string
	Host             string
	Proto            string
	Header           http.Header // a copy; Authorization is replaced by its scheme
	ContentLength    int64
	TransferEncoding []string
	Body             []byte // up to 1 MiB
}

const maxRecordedBody = 1 << 20

// SetTokenFault makes the authorization host misbehave as f from now on;
// SetTokenFault(Fault{}) restores normal answers.
func (s *Server) SetTokenFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenFault, s.tokenFaultN = f, 0
}

// SetAPIFault makes the API host misbehave as f from now on (before any
// other check); SetAPIFault(Fault{}) restores normal answers.
func (s *Server) SetAPIFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiFault, s.apiFaultN = f, 0
}

// takeFaultLocked returns the fault that applies to this request.
func takeFaultLocked(f Fault, n *int) Fault {
	*n++
	if f.Kind == FaultNone || (f.Every > 1 && (*n-1)%f.Every != 0) {
		return Fault{}
	}
	return f
}

// TokenArrivals returns the arrival time of every request to the authorize
// endpoint, oldest first, taken before any delay or fault: the figure a bank
// counts its per-minute budget on. ResetStats does not clear it.
func (s *Server) TokenArrivals() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.arrivals)
}

// TokenArrivalsLastMinute returns how many token requests arrived in the 60
// seconds up to now (the emulator's clock), whatever their answer.
func (s *Server) TokenArrivalsLastMinute() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	i, _ := slices.BinarySearchFunc(s.arrivals, now.Add(-time.Minute), func(a, t time.Time) int {
		if !a.After(t) {
			return -1
		}
		return 1
	})
	return len(s.arrivals) - i
}

// MaxTokenArrivalsPerMinute returns the largest number of token requests
// that arrived within any rolling 60 seconds.
func (s *Server) MaxTokenArrivalsPerMinute() int {
	return MaxTokenRequestsInWindow(s.TokenArrivals(), time.Minute)
}

// Received returns every request the API host received, oldest first.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// authorizeFault counts a token request's arrival, waits the token latency
// and acts out the token fault; it returns the fault and whether the
// request was answered (or dropped) already.
func (s *Server) authorizeFault(w http.ResponseWriter, r *http.Request) (Fault, bool) {
	s.mu.Lock()
	latency := s.tokenLatency
	s.recordArrivalLocked(r, s.now())
	f := takeFaultLocked(s.tokenFault, &s.tokenFaultN)
	s.mu.Unlock()
	if !delay(r.Context(), latency) {
		return f, true
	}
	if f.Kind == FaultMalformed {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, malformedToken) //nolint:errcheck // the client went away
		return f, true
	}
	return f, applyFault(w, r, f)
}

// record wraps the API host's handler: it records each request as it
// arrived, then applies the API fault.
func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
		r.Body = io.NopCloser(bytes.NewReader(body))
		h := r.Header.Clone()
		if a := h.Get("Authorization"); a != "" {
			scheme, _, _ := bytes.Cut([]byte(a), []byte(" "))
			h.Set("Authorization", string(scheme)+" [redacted]")
		}
		s.mu.Lock()
		s.received = append(s.received, Received{Time: s.now(), Method: r.Method, RequestURI: r.RequestURI, Host: r.Host,
			Proto: r.Proto, Header: h, ContentLength: r.ContentLength, TransferEncoding: slices.Clone(r.TransferEncoding), Body: body})
		f := takeFaultLocked(s.apiFault, &s.apiFaultN)
		s.mu.Unlock()
		if f.Kind == FaultMalformed {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Content-Length", "64")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"result":[{"accountId":"`) //nolint:errcheck // the body is meant to be cut short
			panic(http.ErrAbortHandler)
		}
		if applyFault(w, r, f) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// malformedToken is the token endpoint's answer under FaultMalformed: a
// well-framed 200 whose JSON is cut short.
const malformedToken = `{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9","expires_in":`

// applyFault acts out f for the kinds common to both hosts; it reports
// whether the request was answered (or dropped) already.
func applyFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	switch f.Kind {
	case FaultStatus:
		if f.Status == http.StatusTooManyRequests {
			tooMany(f.RetryAfter).write(w)
		} else {
			errReply(f.Status, "injected_fault", "Injected fault: "+http.StatusText(f.Status)+".").write(w)
		}
		return true
	case FaultSlow:
		delay(r.Context(), f.Delay)
	case FaultReset:
		reset(w)
		return true
	case FaultCloseConn:
		w.Header().Set("Connection", "close")
	}
	return false
}

// reset drops the client's connection with a TCP reset.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	c, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := c
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0) //nolint:errcheck // best effort: a plain close still ends the connection
	}
	c.Close()
}
