package signer

import (
	"context"
	"crypto"
	"io"
	"net/http"

	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
)

// TracedSigner is a key held elsewhere (Vault Transit) whose signing call
// can join the request's trace: SignTraced is Sign with ctx's span as the
// parent of its own, bounded by the key's timeout, not by ctx's end.
type TracedSigner interface {
	crypto.Signer
	SignTraced(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// startSpan opens the "sign" span of req (whose span records) and returns
// req with it in its context: the profile and where the key is, local or
// vault_transit; never the key, the signature or a header value.
func (s *signer) startSpan(req *http.Request, st *keyState) (*http.Request, trace.Span) {
	where := "local"
	if _, ok := st.signer.(TracedSigner); ok {
		where = "vault_transit"
	}
	ctx, sp := tracing.Start(req.Context(), tracing.SpanSign, trace.SpanKindInternal,
		tracing.KeyProfile.String(s.p.profile), tracing.KeySigningKey.String(where))
	return req.WithContext(ctx), sp
}

// boundTo returns key bound to ctx's trace when key is a TracedSigner and
// ctx's span records; otherwise key itself.
func boundTo(ctx context.Context, key crypto.Signer) crypto.Signer {
	if ts, ok := key.(TracedSigner); ok && tracing.Recording(ctx) != nil {
		return boundSigner{ctx: ctx, TracedSigner: ts}
	}
	return key
}

type boundSigner struct {
	ctx context.Context
	TracedSigner
}

func (b boundSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return b.SignTraced(b.ctx, digest, opts)
}
