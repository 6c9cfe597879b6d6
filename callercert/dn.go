package callercert

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"
)

// attrNames are the RFC 4514 short names (and a few common ones), by OID.
var attrNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.5":                    "SERIALNUMBER",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "STREET",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.17":                   "POSTALCODE",
	"2.5.4.97":                   "ORGANIZATIONIDENTIFIER",
	"0.9.2342.19200300.100.1.25": "DC",
	"0.9.2342.19200300.100.1.1":  "UID",
	"1.2.840.113549.1.9.1":       "EMAILADDRESS",
}

// longNames maps the spellings accepted in configuration to short names.
var longNames = map[string]string{
	"COMMONNAME": "CN", "COUNTRYNAME": "C", "LOCALITYNAME": "L", "STATEORPROVINCENAME": "ST",
	"ORGANIZATIONNAME": "O", "ORGANIZATIONALUNITNAME": "OU", "S": "ST", "E": "EMAILADDRESS",
}

// ParseDN parses a distinguished name written as RFC 4514 text, most
// specific first ("CN=payments,OU=apps,O=Example,C=DK"), and returns its
// canonical form: short upper-case attribute names, no spaces around
// separators, attributes of a multi-valued RDN ('+') sorted. Values are
// compared exactly.
func ParseDN(s string) (string, error) {
	var rdns [][]string
	var cur []string
	var b strings.Builder
	flush := func(end byte) error {
		attr, err := canonicalAttr(b.String())
		if err != nil {
			return fmt.Errorf("distinguished name %q: %w", s, err)
		}
		b.Reset()
		cur = append(cur, attr)
		if end != '+' {
			rdns = append(rdns, cur)
			cur = nil
		}
		return nil
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 >= len(s) {
				return "", fmt.Errorf("distinguished name %q ends in a lone backslash", s)
			}
			b.WriteByte(c)
			b.WriteByte(s[i+1])
			i++
		case ',', ';', '+':
			if err := flush(c); err != nil {
				return "", err
			}
		default:
			b.WriteByte(c)
		}
	}
	if err := flush(0); err != nil {
		return "", err
	}
	return render(rdns), nil
}

// canonicalAttr turns "type=value" into "TYPE=value" with value escapes
// normalised.
func canonicalAttr(s string) (string, error) {
	typ, val, ok := strings.Cut(s, "=")
	typ = strings.ToUpper(strings.TrimSpace(typ))
	if !ok || typ == "" {
		return "", fmt.Errorf("%q is not type=value", strings.TrimSpace(s))
	}
	if n, ok := longNames[typ]; ok {
		typ = n
	}
	typ = strings.TrimPrefix(typ, "OID.")
	if n, ok := attrNames[typ]; ok {
		typ = n
	}
	known := slices.Contains(shortNames(), typ)
	if !known && !isOID(typ) {
		return "", fmt.Errorf("unknown attribute type %q (use CN, O, OU, C, L, ST, SERIALNUMBER... or a dotted OID)", typ)
	}
	v, err := unescape(trimValue(val))
	if err != nil {
		return "", err
	}
	return typ + "=" + escape(v), nil
}

// trimValue removes the spaces around a value that are not part of it: an
// escaped trailing space ("\ ") is kept.
func trimValue(v string) string {
	v = strings.TrimLeft(v, " \t")
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		n := 0
		for j := len(v) - 2; j >= 0 && v[j] == '\\'; j-- {
			n++
		}
		if n%2 == 1 {
			break // the space is escaped
		}
		v = v[:len(v)-1]
	}
	return v
}

func shortNames() []string {
	out := make([]string, 0, len(attrNames))
	for _, n := range attrNames {
		out = append(out, n)
	}
	return out
}

func isOID(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c == '.') {
			return false
		}
	}
	return strings.Contains(s, ".")
}

func unescape(v string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 >= len(v) {
			return "", fmt.Errorf("value %q ends in a lone backslash", v)
		}
		// \XX hex pair or an escaped special character.
		if i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			b.WriteByte(unhex(v[i+1])<<4 | unhex(v[i+2]))
			i += 2
			continue
		}
		b.WriteByte(v[i+1])
		i++
	}
	return b.String(), nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func escape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02X", c)
			continue
		case strings.IndexByte(`,+"\\<>;=`, c) >= 0,
			c == ' ' && (i == 0 || i == len(v)-1),
			c == '#' && i == 0:
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

func render(rdns [][]string) string {
	parts := make([]string, len(rdns))
	for i, r := range rdns {
		r = slices.Clone(r)
		slices.Sort(r)
		parts[i] = strings.Join(r, "+")
	}
	return strings.Join(parts, ",")
}

// CanonicalSubject renders a certificate's raw subject (x509.Certificate
// RawSubject) in ParseDN's canonical form, most specific RDN first, keeping
// the certificate's own order and every attribute.
func CanonicalSubject(rawSubject []byte) (string, error) {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(rawSubject, &seq); err != nil || len(rest) != 0 {
		return "", fmt.Errorf("parsing the certificate subject: %w", err)
	}
	var rdns [][]string
	for i := len(seq) - 1; i >= 0; i-- {
		var r []string
		for _, atv := range seq[i] {
			r = append(r, attrName(atv.Type)+"="+escape(fmt.Sprint(atv.Value)))
		}
		rdns = append(rdns, r)
	}
	return render(rdns), nil
}

func attrName(oid asn1.ObjectIdentifier) string {
	if n, ok := attrNames[oid.String()]; ok {
		return n
	}
	return oid.String()
}
