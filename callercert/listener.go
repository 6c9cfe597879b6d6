package callercert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/tokenproxy/tokenproxy/certs"
)

// ListenerTLS is the TLS block of the proxy listener (listen.proxy_tls).
//
//	listen:
//	  proxy_tls: {cert_file: /etc/tokenproxy/tls.crt, key_file: /etc/tokenproxy/tls.key, client_ca_file: /etc/tokenproxy/callers-ca.crt}
type ListenerTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file,omitempty"`
}

var errNoServerCert = errors.New("the listener's server certificate is not loaded yet")

// ServerConfig is the tls.Config of an HTTPS proxy listener. The server
// certificate is read from holder at each handshake, so a certs.Reloader
// rotating it needs no restart. With clientCAs, a client may present a
// certificate, which must then verify against them (the handshake fails
// otherwise); a client without one still connects and is authenticated by
// Proxy-Authorization. ALPN is http/1.1: CONNECT tunnels need it.
func ServerConfig(holder *certs.Holder, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := holder.Load(); c != nil {
				return c, nil
			}
			return nil, errNoServerCert
		},
	}
	if clientCAs != nil {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = clientCAs
	}
	return cfg
}

// LoadCertPool reads a PEM bundle of CA certificates.
func LoadCertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file) //nolint:gosec // G304: the path is the operator's configured client CA file
	if err != nil {
		return nil, fmt.Errorf("reading the client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("the client CA file %q holds no PEM certificate", file)
	}
	return pool, nil
}
