package signer

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// appendComponentValue appends the RFC 9421 section 2 value of one covered component.
func appendComponentValue(dst []byte, req *http.Request, body []byte, name string, canon map[string]string) ([]byte, error) {
	switch name {
	case "@method":
		return append(dst, req.Method...), nil
	case "@authority":
		return append(dst, authority(req)...), nil
	case "@scheme":
		return append(dst, scheme(req)...), nil
	case "@target-uri":
		dst = append(dst, scheme(req)...)
		dst = append(dst, "://"...)
		dst = append(dst, authority(req)...)
		return append(dst, requestTarget(req)...), nil
	case "@request-target":
		return append(dst, requestTarget(req)...), nil
	case "@path":
		p := ""
		if req.URL != nil {
			p = req.URL.EscapedPath()
		}
		if p == "" {
			p = "/"
		}
		return append(dst, p...), nil
	case "@query":
		dst = append(dst, '?')
		if req.URL != nil {
			dst = append(dst, req.URL.RawQuery...)
		}
		return dst, nil
	}
	var scratch [1]string
	values := headerValues(req, body, name, canon, &scratch)
	if len(values) == 0 {
		return dst, fmt.Errorf("signing: %w: %q is covered by the signature but the request has no such header", ErrMissingHeader, name)
	}
	return appendFieldValues(dst, values), nil
}

func scheme(req *http.Request) string {
	if req.URL != nil && req.URL.Scheme != "" {
		return strings.ToLower(req.URL.Scheme)
	}
	return "https"
}

// authority is the host of the target URI, lower-cased, without the scheme's default port.
func authority(req *http.Request) string {
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	host = strings.ToLower(host)
	switch sc := scheme(req); {
	case sc == "https" && strings.HasSuffix(host, ":443"):
		host = host[:len(host)-4]
	case sc == "http" && strings.HasSuffix(host, ":80"):
		host = host[:len(host)-3]
	}
	return host
}

// appendSignatureParams appends the inner list of covered components and the signature parameters.
func appendSignatureParams(dst []byte, list []string, created int64, expires int64, tail string) []byte {
	dst = append(dst, '(')
	for i, n := range list {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, '"')
		dst = append(dst, n...)
		dst = append(dst, '"')
	}
	dst = append(dst, ");created="...)
	dst = strconv.AppendInt(dst, created, 10)
	if expires != 0 {
		dst = append(dst, ";expires="...)
		dst = strconv.AppendInt(dst, expires, 10)
	}
	return append(dst, tail...)
}

// AppendSignatureBase appends the RFC 9421 section 2.5 signature base to dst and returns it together with
// the offset at which the @signature-params value starts (that value is the Signature-Input member).
func AppendSignatureBase(dst []byte, req *http.Request, body []byte, components []string, params func([]byte) []byte) ([]byte, int, error) {
	return appendSignatureBase(dst, req, body, components, params, nil)
}

func appendSignatureBase(dst []byte, req *http.Request, body []byte, components []string, params func([]byte) []byte, canon map[string]string) ([]byte, int, error) {
	var err error
	for _, c := range components {
		dst = append(dst, '"')
		dst = append(dst, c...)
		dst = append(dst, `": `...)
		if dst, err = appendComponentValue(dst, req, body, c, canon); err != nil {
			return dst, 0, err
		}
		dst = append(dst, '\n')
	}
	dst = append(dst, `"@signature-params": `...)
	off := len(dst)
	dst = params(dst)
	return dst, off, nil
}

func (s *signer) signRFC9421(req *http.Request, body []byte, st *keyState, list []string, now time.Time, bp *[]byte) error {
	created := now.Unix()
	var expires int64
	if s.p.expires > 0 {
		expires = now.Add(s.p.expires).Unix()
	}
	buf, off, err := appendSignatureBase((*bp)[:0], req, body, list, func(b []byte) []byte {
		return appendSignatureParams(b, list, created, expires, st.sigStart)
	}, s.canon)
	*bp = buf[:0]
	if err != nil {
		return err
	}
	sig, err := s.sign(req.Context(), st, buf)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	label := s.p.label
	req.Header["Signature-Input"] = []string{label + "=" + string(buf[off:])}
	out := buf[len(buf):]
	out = append(out, label...)
	out = append(out, "=:"...)
	out = base64.StdEncoding.AppendEncode(out, sig)
	out = append(out, ':')
	req.Header["Signature"] = []string{string(out)}
	return nil
}
