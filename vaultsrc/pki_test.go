package vaultsrc

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// setupPKI mounts a PKI engine with a root CA and a client role whose
// certificates live ttl (backdated by notBefore) and returns the mount and the root.
func setupPKI(t *testing.T, srv *vaulttest.Server, ttl, notBefore string) (string, *x509.Certificate) {
	t.Helper()
	mount := vaulttest.Unique("pki")
	srv.Mount(mount, "pki")
	root := srv.Write(mount+"/root/generate/internal", map[string]any{"common_name": "tokenproxy test root", "ttl": "24h", "key_type": "ec"})
	b, _ := pem.Decode([]byte(root.Data["certificate"].(string)))
	rootCert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	srv.Write(mount+"/roles/client", map[string]any{
		"allow_any_name": true, "ttl": ttl, "max_ttl": "1h", "not_before_duration": notBefore,
		"key_type": "ec", "client_flag": true, "server_flag": false, "no_store": true,
	})
	return mount, rootCert
}

func TestPKIIssuer(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	srv := vaulttest.Start(t)
	mount, root := setupPKI(t, srv, "6s", "1s")
	log, _ := observed()
	c := rootClient(t, srv, WithLogger(log))
	holder := certs.NewHolder(nil)
	iss := c.PKIIssuer(PKIConfig{Mount: mount, Role: "client", CommonName: "payments.tokenproxy.test", RetryInterval: 200 * time.Millisecond}, holder)

	first, err := iss.Issue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	life := first.Leaf.NotAfter.Sub(first.Leaf.NotBefore)
	if life < 6*time.Second || life > 8*time.Second {
		t.Fatalf("lifetime %s, want about 7s (6s ttl + 1s backdating)", life)
	}
	if at := iss.NextRenewal(); at.Before(first.Leaf.NotBefore.Add(life/2)) || !at.Before(first.Leaf.NotAfter) {
		t.Fatalf("renewal at %s of a certificate valid %s..%s", at, first.Leaf.NotBefore, first.Leaf.NotAfter)
	}

	// Handshakes through the holder keep working over several renewals, and
	// the holder never holds an expired certificate.
	url, tlsFor := mtlsServer(t, root)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsFor(holder.GetClientCertificate), DisableKeepAlives: true}}
	ctx, cancel := contextWithCancel(t)
	done := make(chan struct{})
	go func() { defer close(done); iss.Run(ctx) }()
	serials := map[string]bool{}
	end := time.Now().Add(16 * time.Second)
	for time.Now().Before(end) {
		held := holder.Load()
		if now := time.Now(); !now.Before(held.Leaf.NotAfter) {
			t.Fatalf("holder serves an expired certificate (not after %s, now %s)", held.Leaf.NotAfter, now)
		}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("request with the PKI certificate failed: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		serials[string(b)] = true
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	t.Logf("distinct certificates seen by the upstream over 16 s with a 7 s lifetime: %d", len(serials))
	if len(serials) < 3 {
		t.Fatalf("only %d certificates over 16 s; renewal did not run", len(serials))
	}
}

func TestPKIIssuerFailureKeepsCertificate(t *testing.T) {
	srv := vaulttest.Start(t)
	mount, _ := setupPKI(t, srv, "1h", "1s")
	c := rootClient(t, srv)
	holder := certs.NewHolder(nil)
	good := c.PKIIssuer(PKIConfig{Mount: mount, Role: "client", CommonName: "a.test"}, holder)
	cert, err := good.Issue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	bad := c.PKIIssuer(PKIConfig{Mount: mount, Role: "no-such-role", CommonName: "a.test", RetryInterval: 250 * time.Millisecond}, holder)
	if _, err := bad.Issue(t.Context()); err == nil {
		t.Fatal("issue from a missing role succeeded")
	}
	if holder.Load() != cert {
		t.Fatal("a failed issue replaced the certificate")
	}
	// Retries are paced by the limiter: about 4 per second at 250ms.
	before := c.Stats().Requests
	ctx, cancel := contextWithCancel(t)
	bad.ForceRenew()
	done := make(chan struct{})
	go func() { defer close(done); bad.Run(ctx) }()
	time.Sleep(time.Second)
	cancel()
	<-done
	n := c.Stats().Requests - before
	t.Logf("failed issue attempts in 1 s at a 250ms retry interval: %d", n)
	if n < 2 || n > 6 {
		t.Fatalf("%d attempts in 1 s, want about 4", n)
	}
	if holder.Load() != cert {
		t.Fatal("failed renewals replaced the certificate")
	}
	if h := c.Health(); h.OK {
		t.Fatal("health OK while renewals fail")
	}
}

// TestPKISoak runs the issue's acceptance scenario: 2-minute certificates over
// 5 minutes with a request every 50ms, none failing. TOKENPROXY_SOAK=1 enables it.
func TestPKISoak(t *testing.T) {
	if os.Getenv("TOKENPROXY_SOAK") != "1" {
		t.Skip("set TOKENPROXY_SOAK=1 to run the 5-minute PKI soak")
	}
	srv := vaulttest.Start(t)
	mount, root := setupPKI(t, srv, "2m", "30s")
	c := rootClient(t, srv)
	holder := certs.NewHolder(nil)
	iss := c.PKIIssuer(PKIConfig{Mount: mount, Role: "client", CommonName: "soak.test", TTL: 2 * time.Minute}, holder)
	if _, err := iss.Issue(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel(t)
	defer cancel()
	go iss.Run(ctx)
	url, tlsFor := mtlsServer(t, root)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsFor(holder.GetClientCertificate), DisableKeepAlives: true}}
	var ok, failed atomic.Int64
	serials := map[string]bool{}
	minLeft := time.Hour
	end := time.Now().Add(5 * time.Minute)
	for time.Now().Before(end) {
		held := holder.Load()
		minLeft = min(minLeft, time.Until(held.Leaf.NotAfter))
		resp, err := client.Get(url)
		if err != nil {
			failed.Add(1)
			t.Errorf("request failed: %v", err)
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			serials[string(b)] = true
			ok.Add(1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("soak: %d requests ok, %d failed, %d certificates, least remaining validity seen %s, vault requests %d",
		ok.Load(), failed.Load(), len(serials), minLeft.Round(time.Second), c.Stats().Requests)
	if failed.Load() > 0 || len(serials) < 3 {
		t.Fatal(errors.New("soak failed"))
	}
}
