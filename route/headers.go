package route

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopHeaders are removed on both legs (RFC 9110 section 7.6.1), as
// net/http/httputil.ReverseProxy does.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// RemoveHopHeaders deletes hop-by-hop headers, including those the
// Connection header names.
func RemoveHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}
