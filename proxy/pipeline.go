package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Observer receives one event per proxied request, for metrics. It must not block.
type Observer interface {
	Request(route string, status int, code string, upstream time.Duration)
}

// BrokenAnswerObserver is an Observer that also counts the upstream answers
// relayed broken: code is CodeUpstreamBodyBroken (the body ended early) or
// CodeUpstreamAmbiguousFraming (Content-Length and Transfer-Encoding both
// set). It must not block.
type BrokenAnswerObserver interface {
	UpstreamAnswerBroken(route, code string)
}

// pipeline serves requests for routes: sanitize, read the body, attach the
// token, count an unattended call against its consent's budget, sign, send over the route's transport, retry once on a 401.
type pipeline struct {
	log      *zap.Logger
	observer Observer
	broken   BrokenAnswerObserver // nil unless observer is one
	tracer   trace.Tracer         // nil without tracing
}

func newPipeline(log *zap.Logger, o Observer) *pipeline {
	p := &pipeline{log: log, observer: o}
	p.broken, _ = o.(BrokenAnswerObserver)
	return p
}

// exchange records one request's progress for its log line.
type exchange struct {
	route     string
	caller    string // the gateway caller, when one authenticated
	token     string // hit, fetch or none
	requestID string
	upstream  time.Duration
	retried   bool
	ambiguous bool // the upstream's answer had both Content-Length and Transfer-Encoding
	err       *apiError

	// interactionID is the x-fapi-interaction-id sent upstream, on routes that set one.
	interactionID string
}

// handle serves req on route (nil when no route matched) and returns the
// response to give the app: the upstream's, or tokenproxy's own JSON error.
// The returned body logs the request when it is closed.
func (p *pipeline) handle(req *http.Request, route *route.Route, host string) *http.Response {
	start := time.Now()
	ex := exchange{token: "none"}
	req, span := p.startServerSpan(req, route)
	resp := p.serve(req, route, host, &ex)
	if route != nil {
		ex.route = route.Name
	}
	if ex.err != nil {
		resp = ex.err.response(req, ex.route)
	}
	resp.Body = &loggedBody{ReadCloser: resp.Body, p: p, req: req, resp: resp, host: host, ex: ex, start: start, span: span}
	return resp
}

func (p *pipeline) serve(req *http.Request, route *route.Route, host string, ex *exchange) *http.Response {
	if route == nil {
		ex.err = &apiError{Status: http.StatusForbidden, Code: CodeNoRoute,
			Message: "tokenproxy has no route for host " + quoteHost(host) + "; it forwards only to configured APIs"}
		return nil
	}
	ex.route = route.Name
	caller, denied := route.Authorize(req)
	ex.caller = caller
	if denied != nil {
		ex.err = deniedError(denied)
		return nil
	}
	if !route.Ready() {
		ex.err = &apiError{Status: http.StatusServiceUnavailable, Code: CodeNoCredentials, Message: "the route's client certificate is not loaded yet"}
		return nil
	}

	body, aerr := readBody(req, route.MaxBody)
	if aerr != nil {
		ex.err = aerr
		return nil
	}

	var tok *tokencache.Token
	key, useToken, aerr := tokenKey(req, route, caller)
	if aerr != nil {
		ex.err = aerr
		return nil
	}
	if useToken {
		var out tokencache.Outcome
		var err error
		tok, out, err = getToken(req.Context(), route, key)
		ex.token = out.String()
		if err != nil {
			ex.err = routeTokenError(route, err)
			return nil
		}
	}

	// An unattended call is counted against its consent's daily budget
	// right before it first goes upstream; the retry below is not counted.
	if err := route.CountAccess(req, caller); err != nil {
		ex.err = accessError(err)
		return nil
	}

	resp, aerr := p.send(req, route, body, tok, ex)
	if aerr != nil {
		ex.err = aerr
		return nil
	}
	if resp.StatusCode != http.StatusUnauthorized || tok == nil || route.NonceRefused(resp) {
		return resp
	}

	// The upstream rejected the token: drop it (unless another request has
	// already replaced it), get a new one through the limiter and try once more.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	route.Tokens.Invalidate(key, tok)
	tok2, _, err := getToken(req.Context(), route, key)
	ex.token = "refetch"
	ex.retried = true
	if err != nil {
		ex.err = routeTokenError(route, err)
		return nil
	}
	resp, aerr = p.send(req, route, body, tok2, ex)
	if aerr != nil {
		ex.err = aerr
		return nil
	}
	return resp
}

// send sends the request upstream (sendOnce). On a DPoP route whose
// resource server asks for a new nonce, the request is prepared with a new
// proof and sent again, once per nonce change (route.NonceRetry).
func (p *pipeline) send(req *http.Request, rt *route.Route, body []byte, tok *tokencache.Token, ex *exchange) (*http.Response, *apiError) {
	resp, aerr := p.sendOnce(req, rt, body, tok, ex)
	for try := 0; aerr == nil && try < route.MaxNonceRetries; try++ {
		nonce, retry := rt.NonceRetry(resp)
		if !retry {
			break
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		// The retry proves with the nonce this answer demanded.
		resp, aerr = p.sendOnce(req.WithContext(route.WithNonce(req.Context(), nonce)), rt, body, tok, ex)
	}
	return resp, aerr
}

// sendOnce prepares the upstream request through the route (afresh, so a
// retry is signed anew) and performs the round trip.
func (p *pipeline) sendOnce(req *http.Request, rt *route.Route, body []byte, tok *tokencache.Token, ex *exchange) (*http.Response, *apiError) {
	out, err := rt.Prepare(req, body, tok)
	if err != nil {
		return nil, signingError(err)
	}
	ex.requestID = out.Header.Get("X-Request-Id")
	ex.interactionID = out.Header.Get("X-Fapi-Interaction-Id")
	t0 := time.Now()
	resp, err := roundTrip(rt, out)
	ex.upstream += time.Since(t0)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, &apiError{Status: 499, Code: "client_closed", Message: "the app closed the request", cause: err}
		}
		return nil, upstreamError(err)
	}
	// Marked by the route's connection, which then is not reused.
	ex.ambiguous = route.TakeAmbiguousFraming(resp.Header)
	route.RemoveHopHeaders(resp.Header)
	return resp, nil
}

// readBody buffers the request body up to limit, so it can be signed and
// replayed on a retry.
func readBody(req *http.Request, limit int64) ([]byte, *apiError) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return nil, nil
	}
	tooLarge := &apiError{Status: http.StatusRequestEntityTooLarge, Code: CodeBodyTooLarge,
		Message: "the request body is larger than the route's max_body_bytes"}
	if req.ContentLength > limit {
		return nil, tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return nil, &apiError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "the request body could not be read", cause: err}
	}
	if int64(len(b)) > limit {
		return nil, tooLarge
	}
	return b, nil
}

func quoteHost(h string) string {
	if h == "" {
		return "(none)"
	}
	return "\"" + h + "\""
}

// loggedBody writes the request's log line when the response body is closed,
// so the line carries the full duration and the bytes sent.
type loggedBody struct {
	io.ReadCloser
	p     *pipeline
	req   *http.Request
	resp  *http.Response
	host  string
	ex    exchange
	start time.Time
	span  trace.Span // the request's server span, ended with the log line
	n     int64
	rerr  error
	done  bool
}

func (b *loggedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		b.rerr = err
	}
	return n, err
}

func (b *loggedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done {
		return err
	}
	b.done = true
	code := ""
	if b.ex.err != nil {
		code = b.ex.err.Code
	}
	if b.p.observer != nil {
		b.p.observer.Request(b.ex.route, b.resp.StatusCode, code, b.ex.upstream)
	}
	endServerSpan(b.span, b.resp.StatusCode, code)
	// A relayed answer whose body failed (not because the app left) or
	// whose framing was ambiguous is a broken answer: a warning, counted.
	broken := ""
	if b.rerr != nil && !errors.Is(b.rerr, context.Canceled) {
		broken = CodeUpstreamBodyBroken
	}
	if b.p.broken != nil {
		if broken != "" {
			b.p.broken.UpstreamAnswerBroken(b.ex.route, broken)
		}
		if b.ex.ambiguous {
			b.p.broken.UpstreamAnswerBroken(b.ex.route, CodeUpstreamAmbiguousFraming)
		}
	}
	if broken == "" && b.ex.ambiguous {
		broken = CodeUpstreamAmbiguousFraming
	}
	lvl := zapcore.InfoLevel
	if b.ex.err != nil || broken != "" {
		lvl = zapcore.WarnLevel
	}
	// Check first: when the level is disabled the fields, which cost an
	// allocation per request, are not built at all.
	ce := b.p.log.Check(lvl, "request")
	if ce == nil {
		return err
	}
	fields := make([]zap.Field, 0, 14)
	fields = append(fields,
		zap.String("route", b.ex.route),
		zap.String("method", b.req.Method),
		zap.String("host", b.host),
		zap.String("path", b.req.URL.Path),
		zap.Int("status", b.resp.StatusCode),
		zap.Duration("duration", time.Since(b.start)),
		zap.Duration("upstream", b.ex.upstream),
		zap.String("token", b.ex.token),
		zap.Int64("bytes", b.n),
	)
	if b.ex.caller != "" {
		fields = append(fields, zap.String("caller", b.ex.caller))
	}
	if b.ex.requestID != "" {
		fields = append(fields, zap.String("request_id", b.ex.requestID))
	}
	if b.ex.interactionID != "" {
		fields = append(fields, zap.String("interaction_id", b.ex.interactionID))
	}
	if b.ex.retried {
		fields = append(fields, zap.Bool("retried_after_401", true))
	}
	if broken != "" {
		fields = append(fields, zap.String("error", broken))
		if b.ex.ambiguous && broken != CodeUpstreamAmbiguousFraming {
			fields = append(fields, zap.Bool("ambiguous_framing", true))
		}
		if b.rerr != nil {
			fields = append(fields, zap.NamedError("cause", b.rerr))
		}
	}
	if b.ex.err != nil {
		fields = append(fields, zap.String("error", b.ex.err.Code))
		if b.ex.err.cause != nil {
			fields = append(fields, zap.NamedError("cause", b.ex.err.cause))
		}
	}
	ce.Write(fields...)
	return err
}
