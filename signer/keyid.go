package signer

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Serial number formats for the {serial} placeholder (option serial_format).
const (
	SerialHexUpper = "hex"       // upper-case hexadecimal without leading zeros, e.g. 6AEB4444FBAAD267 (default)
	SerialHexLower = "hex-lower" // lower-case hexadecimal
	SerialDecimal  = "decimal"   // decimal
)

// Distinguished name orders for the {issuer} and {subject} placeholders (option dn_order).
const (
	// DNOrderRFC4514 writes the RDNs last-to-first as RFC 4514 section 2.1 prescribes and as
	// Java's X500Principal.getName() does: "O=PSDNO-FSA-ABCA,L=Trondheim,C=NO" for an issuer encoded C, L, O.
	// It is the default.
	DNOrderRFC4514 = "rfc4514"
	// DNOrderCertificate writes the RDNs in the order they are encoded in the certificate, with the same
	// escaping: "C=NO,L=Trondheim,O=PSDNO-FSA-ABCA". OpenSSL's one-line forms use this order.
	DNOrderCertificate = "certificate"
)

// FormatSerial formats a certificate serial number for a keyId.
func FormatSerial(serial *big.Int, format string) (string, error) {
	if serial == nil {
		return "", errors.New("certificate has no serial number")
	}
	switch format {
	case "", SerialHexUpper:
		return strings.ToUpper(serial.Text(16)), nil
	case SerialHexLower:
		return serial.Text(16), nil
	case SerialDecimal:
		return serial.Text(10), nil
	}
	return "", fmt.Errorf("unknown serial format %q", format)
}

// FormatDN formats a DER-encoded distinguished name (a certificate's RawIssuer or RawSubject) with
// RFC 4514 escaping in the given order. Attribute types outside RFC 4514's short list, such as
// organizationIdentifier (2.5.4.97) in eIDAS certificates, are written as the dotted OID followed by
// "#" and the hex of the value's DER encoding, e.g. "2.5.4.97=#0c0f50534444452d42414641...".
func FormatDN(rawDN []byte, order string) (string, error) {
	var rdns pkix.RDNSequence
	rest, err := asn1.Unmarshal(rawDN, &rdns)
	if err != nil {
		return "", fmt.Errorf("parsing distinguished name: %w", err)
	}
	if len(rest) != 0 {
		return "", errors.New("parsing distinguished name: trailing data")
	}
	switch order {
	case "", DNOrderRFC4514:
		return rdns.String(), nil
	case DNOrderCertificate:
		// RDNSequence.String writes last-to-first; hand it the reversed sequence.
		rev := make(pkix.RDNSequence, len(rdns))
		for i, rdn := range rdns {
			rev[len(rdns)-1-i] = rdn
		}
		return rev.String(), nil
	}
	return "", fmt.Errorf("unknown DN order %q", order)
}

// BerlinGroupKeyID returns the Berlin Group keyId "SN=<serial>,CA=<issuer DN>" for a signing certificate.
func BerlinGroupKeyID(cert *x509.Certificate, serialFormat, dnOrder string) (string, error) {
	return expandKeyID(DefaultBerlinGroupKeyID, cert, nil, serialFormat, dnOrder)
}

// DefaultBerlinGroupKeyID is the key_id template of profile berlin-group.
const DefaultBerlinGroupKeyID = "SN={serial},CA={issuer}"

// keyIDPlaceholders lists the placeholders a key_id template may use and whether they need a certificate.
var keyIDPlaceholders = map[string]bool{
	"serial":             true,
	"serial_decimal":     true,
	"issuer":             true,
	"subject":            true,
	"certificate":        true,
	"certificate_sha256": true,
	"public_key":         false, // from the certificate, or from the key when there is none
}

// parseKeyIDTemplate checks a key_id template and reports whether it needs a certificate.
func parseKeyIDTemplate(tmpl string) (needsCert bool, err error) {
	for s := tmpl; ; {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			if strings.IndexByte(s, '}') >= 0 {
				return false, errors.New(`"}" without "{"`)
			}
			return needsCert, nil
		}
		if strings.IndexByte(s[:i], '}') >= 0 {
			return false, errors.New(`"}" without "{"`)
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return false, errors.New(`"{" without "}"`)
		}
		name := s[i+1 : i+j]
		nc, ok := keyIDPlaceholders[name]
		if !ok {
			return false, fmt.Errorf("unknown placeholder {%s}; use one of {serial}, {serial_decimal}, {issuer}, "+
				"{subject}, {public_key}, {certificate}, {certificate_sha256}", name)
		}
		needsCert = needsCert || nc
		s = s[i+j+1:]
	}
}

// expandKeyID fills a key_id template from the signing certificate.
// pub is used for {public_key} when cert is nil.
func expandKeyID(tmpl string, cert *x509.Certificate, pub crypto.PublicKey, serialFormat, dnOrder string) (string, error) {
	if _, err := parseKeyIDTemplate(tmpl); err != nil {
		return "", err
	}
	var b strings.Builder
	for s := tmpl; ; {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		j := strings.IndexByte(s[i:], '}')
		name := s[i+1 : i+j]
		s = s[i+j+1:]
		if cert == nil && name != "public_key" {
			return "", fmt.Errorf("placeholder {%s} needs a signing certificate", name)
		}
		var v string
		var err error
		switch name {
		case "serial":
			v, err = FormatSerial(cert.SerialNumber, serialFormat)
		case "serial_decimal":
			v, err = FormatSerial(cert.SerialNumber, SerialDecimal)
		case "issuer":
			v, err = FormatDN(cert.RawIssuer, dnOrder)
		case "subject":
			v, err = FormatDN(cert.RawSubject, dnOrder)
		case "certificate":
			v = base64.StdEncoding.EncodeToString(cert.Raw)
		case "certificate_sha256":
			sum := sha256.Sum256(cert.Raw)
			v = hex.EncodeToString(sum[:])
		case "public_key":
			spki := []byte(nil)
			if cert != nil {
				spki = cert.RawSubjectPublicKeyInfo
			} else if spki, err = x509.MarshalPKIXPublicKey(pub); err != nil {
				return "", fmt.Errorf("placeholder {public_key}: %w", err)
			}
			v = base64.StdEncoding.EncodeToString(spki)
		}
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
}
