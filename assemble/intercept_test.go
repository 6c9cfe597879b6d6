package assemble

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
)

func TestBuildProxyListener(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{
		Interception: &config.Interception{CA: config.InterceptionCA{Generate: &config.InterceptionGenerate{WriteCertTo: filepath.Join(dir, "ca.pem")}}},
		Routes:       []config.Route{{Name: "a", Hosts: []string{"a.example"}, Intercept: true}, {Name: "b", Hosts: []string{"b.example"}}},
	}
	g, err := BuildProxyListener(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g.Interceptor == nil || !g.Intercepts("a.example") || g.Intercepts("b.example") || g.ListenerTLS != nil {
		t.Fatalf("gateway %+v", g)
	}
	cfg.Listen.ProxyTLS = &config.ProxyTLS{CertFile: filepath.Join(dir, "missing.crt"), KeyFile: filepath.Join(dir, "missing.key")}
	_, err = BuildProxyListener(context.Background(), cfg, Options{})
	var fe *problem.FieldError
	if !errors.As(err, &fe) || fe.Path != "listen.proxy_tls" {
		t.Fatalf("got %v", err)
	}
	var nilGW *route.ProxyListener
	if nilGW.Intercepts("a.example") || nilGW.Jobs() != nil {
		t.Fatal("a nil gateway intercepts nothing")
	}
}
