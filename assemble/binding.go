package assemble

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// binding is a route's sender constraint (token.dpop or
// token.certificate_bound); nil for bearer tokens.
type binding struct {
	// as proves token requests, with the token endpoint's nonces; rs is the
	// same key with the resource server's nonces.
	as, rs *dpop.Client
	// cert is the client certificate's binding, when tokens are bound to it.
	cert *certBinding
}

// buildBinding loads token.dpop's key or follows the client certificate for
// token.certificate_bound; nil without either. p is the token's path.
func buildBinding(ctx context.Context, p string, r *route.Route, t *config.Token, o Options) (*binding, error) {
	switch {
	case t.DPoP != nil:
		key, err := signingKey(ctx, p+".dpop.private_key", t.DPoP.PrivateKey, o)
		if err != nil {
			return nil, err
		}
		pr, err := dpop.New(key, t.DPoP.Algorithm)
		if err != nil {
			return nil, &problem.FieldError{Path: p + ".dpop", Err: err,
				Fix: "use a P-256 key with ES256 or an RSA key of at least 2048 bits with PS256 (algorithm may be left out)"}
		}
		if o.Store != nil && t.DPoP.PrivateKey.File != "" {
			o.Log.Warn("tokens shared through the store are bound to this route's DPoP key: every replica must hold the same key file, or the replicas keep fetching tokens for their own keys; a Vault Transit key (dpop.private_key.vault_transit) is one key for all",
				zap.String("route", r.Name), zap.String("field", p+".dpop.private_key.file"))
		}
		// The app's proofs and nonces never reach the upstream.
		r.Own(dpop.HeaderProof, dpop.HeaderNonce)
		return &binding{as: dpop.NewClient(pr), rs: dpop.NewClient(pr)}, nil
	case t.CertificateBound:
		if r.ClientCert == nil {
			return nil, problem.Field(p+".certificate_bound", "the route presents no client certificate to bind tokens to; add client_certificate")
		}
		cb := &certBinding{}
		cb.set(r.ClientCert.Load())
		r.ClientCert.Subscribe(func(c *tls.Certificate) {
			cb.set(c)
			if cache := cb.cache.Load(); cache != nil {
				// Tokens bound to the old certificate are fetched anew with the
				// new one before a request needs them.
				cache.Rebind()
			}
		})
		return &binding{cert: cb}, nil
	}
	return nil, nil
}

// jkt is the DPoP key's thumbprint, which a pushed authorization request
// names (dpop_jkt) so that the bank binds the code to the key; "" without DPoP.
func (b *binding) jkt() string {
	if b == nil || b.as == nil {
		return ""
	}
	return b.as.Thumbprint()
}

// endpoint installs the binding on a token endpoint.
func (b *binding) endpoint(ep *oauth.Endpoint) {
	if b == nil {
		return
	}
	if b.as != nil {
		ep.DPoP = b.as
	}
	if b.cert != nil {
		ep.CertBinding = b.cert.current
	}
}

// dpopRoute reports whether token requests carry DPoP proofs, which may be
// sent twice (the nonce dance), so that each is paced as it reaches the bank.
func (b *binding) dpopRoute() bool { return b != nil && b.as != nil }

// attach installs the binding on the built route and its cache.
func (b *binding) attach(r *route.Route, cache *tokencache.Cache) {
	if b == nil {
		return
	}
	if b.rs != nil {
		r.DPoP = b.rs
	}
	if b.cert != nil {
		b.cert.cache.Store(cache)
	}
}

// certBinding is the current client certificate's binding,
// "x5t#S256:<thumbprint>", computed once per certificate.
type certBinding struct {
	cur   atomic.Pointer[string]
	cache atomic.Pointer[tokencache.Cache]
}

func (c *certBinding) set(cert *tls.Certificate) {
	s := ""
	if cert != nil && len(cert.Certificate) > 0 {
		s = CertThumbprint(cert.Certificate[0])
	}
	c.cur.Store(&s)
}

func (c *certBinding) current() string { return *c.cur.Load() }

// CertThumbprint is a certificate's binding as RFC 8705 §3.1 names it in
// cnf: "x5t#S256:" and the base64url SHA-256 of its DER.
func CertThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return oauth.CertBindingPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// certGeneration counts the rotations of a route's client certificate when
// its tokens are bound to it, so that its transport sends no request on a
// connection made with an older certificate (route.TransportLimits); nil
// otherwise.
func certGeneration(h *certs.Holder, t *config.Token) func() uint64 {
	if h == nil || t == nil || !t.CertificateBound {
		return nil
	}
	var gen atomic.Uint64
	h.Subscribe(func(*tls.Certificate) { gen.Add(1) })
	return gen.Load
}
