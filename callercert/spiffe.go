package callercert

import (
	"fmt"
	"strings"
)

// SPIFFEID is a parsed spiffe://trust-domain/path identifier.
type SPIFFEID struct {
	TrustDomain string
	Path        string // "" or "/seg/seg"
}

// String returns the canonical form.
func (id SPIFFEID) String() string { return "spiffe://" + id.TrustDomain + id.Path }

// ParseSPIFFEID parses s under the SPIFFE ID rules: scheme "spiffe", a
// trust domain of lower-case letters, digits, '.', '-' and '_', and a path
// of non-empty segments of letters, digits, '.', '-' and '_' (not "." or
// ".."), with no port, user, query, fragment or trailing slash; at most
// 2048 bytes.
func ParseSPIFFEID(s string) (SPIFFEID, error) {
	const scheme = "spiffe://"
	if len(s) > 2048 {
		return SPIFFEID{}, fmt.Errorf("SPIFFE ID longer than 2048 bytes")
	}
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return SPIFFEID{}, fmt.Errorf("SPIFFE ID %q must start with spiffe://", s)
	}
	rest := s[len(scheme):]
	td, path, _ := strings.Cut(rest, "/")
	if td == "" {
		return SPIFFEID{}, fmt.Errorf("SPIFFE ID %q has no trust domain", s)
	}
	for _, c := range []byte(td) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return SPIFFEID{}, fmt.Errorf("SPIFFE ID %q: the trust domain may hold only lower-case letters, digits, '.', '-' and '_'", s)
		}
	}
	id := SPIFFEID{TrustDomain: td}
	if !strings.Contains(rest, "/") {
		return id, nil
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return SPIFFEID{}, fmt.Errorf("SPIFFE ID %q: empty, '.' or '..' path segment (or a trailing slash)", s)
		}
		for _, c := range []byte(seg) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return SPIFFEID{}, fmt.Errorf("SPIFFE ID %q: the path may hold only letters, digits, '.', '-' and '_'", s)
			}
		}
	}
	id.Path = "/" + path
	return id, nil
}
