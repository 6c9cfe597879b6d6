// Package intercept terminates an app's TLS inside a CONNECT tunnel so that
// tokenproxy can serve the decrypted requests through its normal pipeline.
//
// It holds the interception CA behind one small interface (CA) with three
// sources — PEM files reloaded on change (FileCA), Vault's PKI engine where
// the CA key never leaves Vault (VaultCA), and a fresh in-memory CA per
// process whose certificate, never its key, is written for the app to trust
// (GeneratedCA) — and issues short-lived ECDSA P-256 leaf certificates for
// exactly the host a tunnel was opened to (Leaves).
//
// The caller decides which hosts are intercepted; this package makes any
// other host impossible: every issuing function takes an Allow check, and
// the app-side tls.Config refuses a handshake whose SNI is not the CONNECT
// host. The proxy (proxy/connect.go) wires it into its own CONNECT handler:
//
//	t, err := leaves.Open(r.Host, interceptingRoute) // no intercepting route: 403 JSON, never a blind tunnel
//	caller, denied := route.Authorize(r)             // Proxy-Authorization or client certificate, before the 200
//	conn := hijack(w)                                // then "200 Connection established"
//	tc, err := t.Handshake(ctx, conn)                // a leaf for the CONNECT host only; SNI must match; TLS first
//	http.Server{...}.Serve(oneConn(tc))              // the plain listener's timeouts and keep-alive
//	// each request: t.Check(r), then the same pipeline as plain HTTP, with the caller fixed
//
// The CA key is never logged, returned in an error, or written to disk.
package intercept
