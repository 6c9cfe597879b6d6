package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/tokenproxy/tokenproxy/route"
)

// router finds a route by the host an app asked for.
type router map[string]*route.Route

func (rt router) match(hostport string) (*route.Route, string) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return rt[host], host
}

// newForwardHandler is the forward proxy apps reach through HTTP_PROXY.
// Absolute-URI requests are routed by host in the table served when they
// arrive (routes); CONNECT is refused with an explanation because
// tokenproxy itself originates the TLS (the connector serves it instead
// when a route intercepts). Every answer is written by writeResponse, as on
// a route's local port.
func newForwardHandler(p *pipeline, routes func() router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := routes()
		if r.Method != http.MethodConnect && r.URL.IsAbs() {
			if found, _ := rt.match(r.URL.Host); found != nil {
				defer found.Begin()()
			}
		}
		writeResponse(w, p.forward(r, rt)) //nolint:bodyclose // writeResponse closes the body
	})
}

// forward answers one request on the forward-proxy port.
func (p *pipeline) forward(r *http.Request, rt router) *http.Response {
	if r.Method == http.MethodConnect {
		return p.refuseConnect(r, rt, false)
	}
	if !r.URL.IsAbs() {
		return p.errorResponse(r, &apiError{Status: http.StatusBadRequest, Code: CodeNotProxyRequest,
			Message: "this is tokenproxy's forward-proxy port: send absolute URLs (set HTTP_PROXY / http_proxy to this address), or call a route's local port"}, "")
	}
	route, host := rt.match(r.URL.Host)
	if r.URL.Scheme != "http" {
		return p.errorResponse(r, &apiError{Status: http.StatusBadRequest, Code: CodeBadRequest,
			Message: fmt.Sprintf("scheme %q is not proxied; call http:// URLs, tokenproxy sends them upstream as https", r.URL.Scheme)}, routeName(route))
	}
	return p.handle(r, route, host)
}

// refuseConnect is the 403 for a CONNECT that gets no tunnel: the host has
// no route, or its route does not intercept. intercepting says whether this
// listener terminates tunnels at all (some route has intercept: true), which
// decides what the app or the operator can do about it.
func (p *pipeline) refuseConnect(r *http.Request, rt router, intercepting bool) *http.Response {
	route, host := rt.match(r.Host)
	var msg string
	switch {
	case route == nil && intercepting:
		msg = "tokenproxy has no route for host " + quoteHost(host) + ": it accepts CONNECT only to the hosts of routes with intercept: true, and never tunnels to anything else"
	case route == nil:
		msg = "tokenproxy has no route for host " + quoteHost(host) + ", and it does not tunnel CONNECT: it originates the TLS itself so that it can present the client certificate and attach the token"
	case intercepting:
		msg = "route " + route.Name + " does not intercept CONNECT: call http://" + host + "/... (plain http) through this proxy instead of https://, or set intercept: true on the route"
	default:
		msg = "tokenproxy does not tunnel CONNECT: it originates the TLS itself so that it can present the client certificate and attach the token. " +
			"Call http://" + host + "/... (plain http) through this proxy instead of https://, or set intercept: true on route " + route.Name + " with an interception block (docs/interception.md)"
	}
	return p.errorResponse(r, &apiError{Status: http.StatusForbidden, Code: CodeConnectRefused, Message: msg}, routeName(route))
}

func routeName(r *route.Route) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// localHandler serves route name's local port: every request goes to the
// route of that name served when it arrives.
func (s *Server) localHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := s.Route(name)
		if rt == nil { // removed by a reload; its listener is draining
			writeResponse(w, s.pipe.handle(r, nil, r.Host)) //nolint:bodyclose // writeResponse closes the body
			return
		}
		defer rt.Begin()()
		newLocalHandler(s.pipe, rt).ServeHTTP(w, r)
	})
}

// newLocalHandler serves a route's local port: every request goes to that route.
func newLocalHandler(p *pipeline, route *route.Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			writeResponse(w, p.errorResponse(r, &apiError{Status: http.StatusForbidden, Code: CodeConnectRefused, //nolint:bodyclose // writeResponse closes the body
				Message: "this is route " + route.Name + "'s local port; send plain HTTP requests to it"}, route.Name))
			return
		}
		writeResponse(w, p.handle(r, route, route.Upstream.Hostname())) //nolint:bodyclose // writeResponse closes the body
	})
}

// errorResponse builds an error answer that is logged like any request.
func (p *pipeline) errorResponse(r *http.Request, e *apiError, route string) *http.Response {
	resp := e.response(r, route)
	resp.Body = &loggedBody{ReadCloser: resp.Body, p: p, req: r, resp: resp, host: r.Host,
		ex: exchange{route: route, token: "none", err: e}, start: timeNow()}
	return resp
}

// writeResponse copies resp to w as its body arrives, whatever its framing:
// a read that returned data is flushed to the app unless it also returned
// the end of the body (then net/http sends the answer as the handler
// returns: a small complete answer costs no extra write). A body that fails
// before its end (cut, reset) aborts the app's connection without a clean
// end, as httputil.ReverseProxy does, so that the app sees a broken answer
// rather than a short complete one; the status and headers are sent first.
func writeResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if len(resp.Trailer) > 0 {
		for k := range resp.Trailer {
			h.Add("Trailer", k)
		}
	}
	w.WriteHeader(resp.StatusCode)
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	flusher, _ := w.(http.Flusher)
	for {
		n, err := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return
			}
			if err == nil && flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if flusher != nil {
				flusher.Flush() // the status and headers, when nothing was sent yet
			}
			resp.Body.Close() // logs the answer as broken before the panic unwinds
			panic(http.ErrAbortHandler)
		}
	}
	for k, v := range resp.Trailer {
		h[k] = v
	}
}
