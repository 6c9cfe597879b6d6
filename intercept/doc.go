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
//	gp.OnRequest().HandleConnectFunc(func(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
//		route := routes.match(host)            // no intercepting route: refuse with the JSON error
//		caller, err := authorise(ctx.Req, route) // Proxy-Authorization, before the tunnel is accepted
//		t, err := intercept.NewTunnel(host, caller)
//		ctx.UserData = t
//		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: leaves.GoproxyTLSConfig(allow)}, host
//	})
//	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
//		if t, ok := ctx.UserData.(*intercept.Tunnel); ok {
//			if err := t.Check(r); err != nil { ... refuse ... }
//		}
//		... the normal pipeline ...
//	})
//
// The CA key is never logged, returned in an error, or written to disk.
package intercept
