package route

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenproxy/tokenproxy/signer"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// SigningError is a request the route could not sign.
type SigningError struct {
	Err error
	// Unavailable: the signing key is held in Vault, which cannot be reached.
	Unavailable bool
	// MissingHeader: the request lacks a header the signature must cover.
	MissingHeader bool
}

func (e *SigningError) Error() string { return "signing: " + e.Err.Error() }

func (e *SigningError) Unwrap() error { return e.Err }

// Prepare builds the request to send upstream for in, whose body is body:
// https to the route's upstream with the app's path and query, end-to-end
// headers only (no hop-by-hop header, no Proxy-Authorization, none of the
// headers the route owns: Authorization on a token route, the signing
// headers on a signed one), the token's Authorization when tok is not nil,
// with a fresh DPoP proof on a DPoP route, and the signature when the route
// signs. It is called afresh for a retry, so a retry is signed (and proved)
// anew. A signing or proof failure is a *SigningError.
func (r *Route) Prepare(in *http.Request, body []byte, tok *tokencache.Token) (*http.Request, error) {
	out := r.outgoing(in, body)
	if tok != nil && r.DPoP != nil && tok.Binding != "" {
		if err := r.prove(out, tok); err != nil {
			return nil, err
		}
	} else if tok != nil {
		out.Header.Set("Authorization", tok.Header)
	}
	if r.Signer != nil {
		if err := r.Signer.Sign(out, body); err != nil {
			var unavailable *vaultsrc.UnavailableError
			return nil, &SigningError{Err: err, Unavailable: errors.As(err, &unavailable),
				MissingHeader: errors.Is(err, signer.ErrMissingHeader)}
		}
	}
	return out, nil
}

// outgoing copies in for the upstream with a replayable body.
func (r *Route) outgoing(in *http.Request, body []byte) *http.Request {
	up := r.Upstream
	u := &url.URL{Scheme: "https", Host: up.Host, RawQuery: in.URL.RawQuery}
	u.Path, u.RawPath = joinPath(up, in.URL)
	h := make(http.Header, len(in.Header)+4)
	for k, v := range in.Header {
		h[k] = v
	}
	RemoveHopHeaders(h)
	for _, k := range r.owned {
		h.Del(k)
	}
	out := (&http.Request{
		Method:     in.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       up.Host,
	}).WithContext(in.Context())
	if len(body) > 0 {
		out.ContentLength = int64(len(body))
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	} else {
		out.Body = http.NoBody
		if in.ContentLength > 0 || in.Method == http.MethodPost || in.Method == http.MethodPut || in.Method == http.MethodPatch {
			out.ContentLength = 0
		}
	}
	return out
}

// joinPath appends the request's path to the upstream's base path.
func joinPath(base, req *url.URL) (path, rawPath string) {
	if base.Path == "" || base.Path == "/" {
		return req.Path, req.RawPath
	}
	bp := strings.TrimSuffix(base.Path, "/")
	path = bp + "/" + strings.TrimPrefix(req.Path, "/")
	if req.RawPath != "" {
		rawPath = strings.TrimSuffix(base.EscapedPath(), "/") + "/" + strings.TrimPrefix(req.RawPath, "/")
	}
	return path, rawPath
}
