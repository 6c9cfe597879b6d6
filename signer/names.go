package signer

// Checks of the header and component names a signing configuration lists.

import (
	"fmt"
	"strings"
)

// normalizeNames lower-cases and checks covered header (or component) names.
func normalizeNames(field string, names []string, cavage, optional bool) ([]string, error) {
	out := make([]string, 0, len(names))
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		l := strings.ToLower(strings.TrimSpace(n))
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case l == "":
			return nil, verr(f, "empty header name")
		case seen[l]:
			return nil, verr(f, "%q is listed twice", n)
		case cavage && l == "(request-target)" && !optional:
		case cavage && (l == "(created)" || l == "(expires)"):
			return nil, verr(f, "%q is not part of draft-cavage-http-signatures-10; remove it", n)
		case !cavage && strings.HasPrefix(l, "@"):
			if !rfc9421Derived[l] {
				return nil, verr(f, "unsupported derived component %q; use @method, @target-uri, @authority, @scheme, @request-target, @path or @query", n)
			}
			if optional {
				return nil, verr(f, "derived component %q is always present; list it under headers", n)
			}
		case optional && l == "psu-*":
		case !validToken(l):
			return nil, verr(f, "%q is not a valid header name", n)
		}
		seen[l] = true
		out = append(out, l)
	}
	return out, nil
}

var rfc9421Derived = map[string]bool{
	"@method": true, "@target-uri": true, "@authority": true, "@scheme": true,
	"@request-target": true, "@path": true, "@query": true,
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validSFKey(s string) bool {
	if s == "" || !(s[0] == '*' || ('a' <= s[0] && s[0] <= 'z')) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("_-.*", c) >= 0) {
			return false
		}
	}
	return true
}
