// Package callercert authenticates gateway callers by TLS client
// certificate: it maps a verified certificate to a caller name by its
// subject (common name or full distinguished name) or its SPIFFE ID, and
// builds the server tls.Config of an HTTPS proxy listener whose
// certificate reloads and whose clients may present a certificate or fall
// back to Basic passwords.
package callercert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Match is a caller's certificate block in the configuration; exactly one
// field is set.
//
//	callers:
//	  - name: payments
//	    certificate: {subject: "CN=payments,O=Example,C=DK"}  # or just "payments" for the CN
//	  - name: ledger
//	    certificate: {spiffe_id: spiffe://prod.example/ns/ledger/sa/api}
type Match struct {
	// Subject is a common name ("payments") or, when it holds '=', a full
	// distinguished name in RFC 4514 order, most specific first, as
	// `openssl x509 -noout -subject -nameopt RFC2253` prints it.
	Subject string `yaml:"subject,omitempty"`
	// SPIFFEID is the certificate's one URI SAN, spiffe://trust-domain/path.
	SPIFFEID string `yaml:"spiffe_id,omitempty"`
}

// Caller names a caller and the certificate that identifies it.
type Caller struct {
	Name        string
	Certificate Match
}

// Mapper maps verified client certificates to caller names. It is
// immutable after NewMapper and safe for concurrent use.
type Mapper struct {
	byCN, byDN, bySPIFFE map[string]string
}

// NewMapper validates callers and builds the mapping. Errors name the
// field path (callers[i].certificate...) and the fix. Callers without a
// certificate block are skipped (they authenticate by password only).
func NewMapper(callers []Caller) (*Mapper, error) {
	m := &Mapper{byCN: map[string]string{}, byDN: map[string]string{}, bySPIFFE: map[string]string{}}
	var errs []error
	add := func(idx map[string]string, key, name, at string) {
		if other, dup := idx[key]; dup {
			errs = append(errs, fmt.Errorf("%s: callers %q and %q have the same certificate identity; give each caller its own", at, other, name))
			return
		}
		idx[key] = name
	}
	for i, c := range callers {
		at := fmt.Sprintf("callers[%d].certificate", i)
		switch mt := c.Certificate; {
		case mt.Subject == "" && mt.SPIFFEID == "":
			continue
		case mt.Subject != "" && mt.SPIFFEID != "":
			errs = append(errs, fmt.Errorf("%s: set subject or spiffe_id, not both", at))
		case mt.SPIFFEID != "":
			id, err := ParseSPIFFEID(mt.SPIFFEID)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.spiffe_id: %w", at, err))
				continue
			}
			add(m.bySPIFFE, id.String(), c.Name, at+".spiffe_id")
		case strings.Contains(mt.Subject, "="):
			dn, err := ParseDN(mt.Subject)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.subject: %w", at, err))
				continue
			}
			add(m.byDN, dn, c.Name, at+".subject")
		default:
			add(m.byCN, strings.TrimSpace(mt.Subject), c.Name, at+".subject")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// UnknownCertificateError is a verified certificate that names no caller.
// The proxy answers 403 caller_not_allowed.
type UnknownCertificateError struct {
	Subject  string
	SPIFFEID string
}

func (e *UnknownCertificateError) Error() string {
	if e.SPIFFEID != "" {
		return fmt.Sprintf("no caller has the certificate identity %s (subject %q)", e.SPIFFEID, e.Subject)
	}
	return fmt.Sprintf("no caller has the certificate subject %q", e.Subject)
}

// Caller returns the caller a verified certificate identifies: by SPIFFE
// ID first (a certificate with URI SANs is judged by its SPIFFE ID alone,
// and must carry exactly one), then by full subject, then by common name.
func (m *Mapper) Caller(cert *x509.Certificate) (string, error) {
	dn, err := CanonicalSubject(cert.RawSubject)
	if err != nil {
		return "", err
	}
	if len(cert.URIs) > 0 {
		if len(cert.URIs) != 1 {
			return "", &UnknownCertificateError{Subject: dn, SPIFFEID: fmt.Sprintf("%d URI SANs (a SPIFFE certificate has exactly one)", len(cert.URIs))}
		}
		if id, err := ParseSPIFFEID(cert.URIs[0].String()); err == nil {
			if name, ok := m.bySPIFFE[id.String()]; ok {
				return name, nil
			}
			return "", &UnknownCertificateError{Subject: dn, SPIFFEID: id.String()}
		}
	}
	if name, ok := m.byDN[dn]; ok {
		return name, nil
	}
	if name, ok := m.byCN[cert.Subject.CommonName]; ok && cert.Subject.CommonName != "" {
		return name, nil
	}
	return "", &UnknownCertificateError{Subject: dn}
}

// FromConnection returns the caller of a TLS connection whose client
// certificate the listener verified (r.TLS on the CONNECT or absolute-URI
// request). ok is false when the client sent no certificate: authenticate
// it by Proxy-Authorization instead.
func (m *Mapper) FromConnection(cs *tls.ConnectionState) (name string, ok bool, err error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false, nil
	}
	name, err = m.Caller(cs.VerifiedChains[0][0])
	return name, true, err
}
