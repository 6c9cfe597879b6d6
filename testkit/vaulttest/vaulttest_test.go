package vaulttest

import (
	"net/http"
	"testing"
)

func TestStartOwnStopRestart(t *testing.T) {
	s := StartOwn(t)
	if !s.healthy() {
		t.Fatal("not healthy after start")
	}
	mount := Unique("kv")
	s.Mount(mount, "kv-v2")
	if v := s.PutKV(mount, "a", map[string]any{"k": "v"}); v != 1 {
		t.Fatalf("first version = %d", v)
	}
	s.Stop()
	if resp, err := http.Get(s.Addr + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		t.Fatal("server still answers after Stop")
	}
	s.Restart()
	if !s.healthy() {
		t.Fatal("not healthy after restart")
	}
	// The dev server's storage is in memory: the mount is gone.
	if sec, err := s.Client().Logical().Read(mount + "/data/a"); err == nil && sec != nil {
		t.Fatalf("data survived a restart: %v", sec.Data)
	}
}

func TestStartShared(t *testing.T) {
	s := Start(t)
	if sec := s.Read("sys/mounts/secret"); sec == nil {
		t.Fatal("the dev server has no kv at secret/")
	}
	roleMount := Unique("approle")
	s.EnableAuth(roleMount, "approle")
	if r, sid := s.AppRole(roleMount, "x", map[string]any{"token_ttl": "1m"}); r == "" || sid == "" {
		t.Fatal("no approle credentials")
	}
}
