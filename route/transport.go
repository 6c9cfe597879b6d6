package route

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// MaxResponseHeaderBytes bounds an upstream's response header block; a
// larger one fails the round trip (docs/limits.md).
const MaxResponseHeaderBytes = 64 << 10

// TransportLimits are a route's timeouts and connection cap towards its upstream.
type TransportLimits struct {
	// Dial bounds the TCP connect and, separately, the TLS handshake.
	Dial time.Duration
	// Upstream bounds the wait for the response header.
	Upstream time.Duration
	// MaxConnections caps the connections to the upstream (and the idle ones kept).
	MaxConnections int
	// CertGeneration, when set, is the client certificate's generation,
	// which moves at each rotation: a connection made under an older one
	// takes no new request (see staleConn). Certificate-bound tokens need
	// it: a token bound to the new certificate fails on a connection that
	// presented the old one.
	CertGeneration func() uint64
}

// NewTransport is a route's transport to its upstream: TLS from tlsConf
// (never the environment's proxy), the response header bounded, and every
// connection read through the framing scanner (upstreamConn).
func NewTransport(tlsConf *tls.Config, rc TransportLimits) *http.Transport {
	dialer := &net.Dialer{Timeout: rc.Dial, KeepAlive: 30 * time.Second}
	handshakeTimeout := rc.Dial
	return &http.Transport{
		Proxy: nil, // never the environment's proxy
		// Both dials wrap the connection in upstreamConn, which reads the
		// decrypted response header blocks: TLS is made here, not by the
		// transport, for that. HTTP/2 stays off, as with any custom dial.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newUpstreamConn(c), nil
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conf := tlsConf
			if conf.ServerName == "" {
				conf = tlsConf.Clone()
				conf.ServerName, _, _ = net.SplitHostPort(addr)
			}
			var gen uint64
			if rc.CertGeneration != nil {
				gen = rc.CertGeneration() // before the handshake picks the certificate
			}
			tc := tls.Client(c, conf)
			hctx, cancel := ctx, context.CancelFunc(func() {})
			if handshakeTimeout > 0 {
				hctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
			}
			err = tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
			}
			if rc.CertGeneration != nil {
				return &staleConn{upstreamConn: newUpstreamConn(tc), gen: gen, cur: rc.CertGeneration}, nil
			}
			return newUpstreamConn(tc), nil
		},
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    rc.Dial,
		ResponseHeaderTimeout:  rc.Upstream,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    rc.MaxConnections,
		MaxConnsPerHost:        rc.MaxConnections,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true, // pass bodies through untouched
	}
}

// errStaleCert refuses a request on a connection made with a client
// certificate that has since been replaced.
var errStaleCert = errors.New("the connection presented a client certificate that has been replaced")

// staleConn is a connection that takes no new request once the client
// certificate it presented is replaced: its first Write fails with nothing
// written, which makes the transport close it and send the request again
// on a new connection (net/http retries a request none of which was
// written, when its body can be replayed: Prepare's always can). Requests
// already written finish on it.
type staleConn struct {
	*upstreamConn
	gen uint64
	cur func() uint64
}

func (c *staleConn) Write(p []byte) (int, error) {
	if c.cur() != c.gen {
		return 0, errStaleCert
	}
	return c.upstreamConn.Write(p)
}
