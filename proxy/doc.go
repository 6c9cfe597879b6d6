// Package proxy is tokenproxy's request path: the forward proxy apps reach
// through HTTP_PROXY and each route's local port. A request is matched to a
// route by host, given the route's bearer token (and signature, when the
// route signs), sent over the route's own mTLS transport, and answered with
// the upstream's response or with tokenproxy's own JSON error carrying the
// X-Tokenproxy-Error header. The routes come built from package route; the
// proxy knows nothing of the configuration file or where credentials live.
package proxy
