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
// host. The proxy wires it into goproxy like this:
//
//	gp.AllowHTTP2 = false
//	gp.OnRequest().HandleConnectFunc(func(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
//		t, err := leaves.Open(host, "", interceptingRoute) // no intercepting route: refuse with the JSON error
//		if err != nil { ctx.Resp = refusal(403, err); return goproxy.RejectConnect, host }
//		caller, denied := authorise(ctx.Req)             // Proxy-Authorization or client certificate, before the tunnel
//		if denied != nil { ctx.Resp = denied; return goproxy.RejectConnect, host }
//		t.Caller = caller
//		ctx.UserData = t                                  // goproxy copies it to every request read from the tunnel
//		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: t.GoproxyTLSConfig}, host
//	})
//	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
//		if t, ok := ctx.UserData.(*intercept.Tunnel); ok {
//			if err := t.Check(r); err != nil { return r, refusal(403, err) } // TLS only, the CONNECT host only
//		}
//		return r, pipeline.handle(r, ...)                 // the normal pipeline
//	})
//
// goproxy_test.go runs exactly this against curl.
//
// The CA key is never logged, returned in an error, or written to disk.
package intercept
