package redisstore

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

// An ACL user with the right password passes Check; a wrong password is a
// clear error naming the cause, and a missing address is refused.
func TestClientCredentials(t *testing.T) {
	srv := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "tp", "on", ">right-pass", "~tp-acl:*", "&tp-acl:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, pass, wantErr string
	}{
		{"right password", "right-pass", ""},
		{"wrong password", "wrong-pass", "WRONGPASS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(ClientConfig{Addrs: []string{srv.Addr()}, DialTimeout: time.Second, ReadTimeout: time.Second,
				Credentials: func(context.Context) (string, string, error) { return "tp", tc.pass, nil }})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := New(ctx, Options{Client: c, Key: testKey, Prefix: "tp-acl", MaxReplicas: 1, PollInterval: time.Second, HealthInterval: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Check(ctx)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Check: %v; want %s", err, tc.wantErr)
			case tc.wantErr != "" && s.Healthy() == nil:
				t.Fatal("healthy with a wrong password")
			}
		})
	}
	if _, err := NewClient(ClientConfig{DialTimeout: time.Second, ReadTimeout: time.Second}); err == nil {
		t.Fatal("NewClient accepted no address")
	}
}

// The store works over TLS (a managed Redis), verifying the server's
// certificate against the configured CA.
func TestClientTLS(t *testing.T) {
	ca, err := pki.NewCA("redis test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := pki.WriteFiles(dir, "redis", leaf, "unused")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}
	srv := redistest.StartTLS(t, &redistest.TLS{CertFile: files.Cert, KeyFile: files.Key, CAFile: caFile, Client: clientTLS})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"trusted CA", clientTLS, true},
		{"unknown CA", &tls.Config{MinVersion: tls.VersionTLS12}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(ClientConfig{Addrs: []string{srv.Addr()}, TLS: tc.conf, DialTimeout: time.Second, ReadTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := New(ctx, Options{Client: c, Key: testKey, Prefix: "tp-tls", MaxReplicas: 1, PollInterval: time.Second, HealthInterval: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Check(ctx); (err == nil) != tc.ok {
				t.Fatalf("Check: %v; want ok=%v", err, tc.ok)
			}
		})
	}
}
