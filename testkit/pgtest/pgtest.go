// Package pgtest runs a private PostgreSQL server for tests: Debian's
// binaries (/usr/lib/postgresql/N/bin), a cluster made with initdb in a
// temporary directory, listening on a free loopback port (password
// authentication) and on a unix socket in that directory. As root the
// server runs as the postgres system user, since postgres refuses root.
//
// With WithTLS (or StartTLS) the server also speaks TLS (ssl = on) with a
// certificate for 127.0.0.1 and localhost issued by its own test CA
// (testkit/pki); CAFile is that CA's PEM file, for a client's sslrootcert.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// User is the superuser the cluster is made with.
const User = "tokenproxy"

// Server is one postgres process and its cluster.
type Server struct {
	t        testing.TB
	bin      string
	dir      string
	port     int
	password string
	cred     *syscall.Credential
	ca       *pki.CA // nil without TLS
	caFile   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// BinDir returns the newest /usr/lib/postgresql/N/bin holding initdb and
// postgres, or "" when none is installed.
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isFile(filepath.Join(d, "initdb")) && isFile(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func version(bin string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return n
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func skip(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true requires it)")
	}
	t.Skip(why)
}

// Option changes how Start makes the server.
type Option func(*options)

type options struct{ tls bool }

// WithTLS turns TLS on (ssl = on): the server presents a certificate for
// 127.0.0.1 and localhost issued by a CA made for it (Server.CA), whose
// PEM file is Server.CAFile. Plain connections are still accepted.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// StartTLS is Start(t, WithTLS()).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return Start(t, WithTLS())
}

// Start makes a cluster, starts postgres for t and stops it (and removes
// the cluster) at cleanup. Without the binaries, or as root without a
// postgres system user, the test is skipped (it fails when CI=true).
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin := BinDir()
	if bin == "" {
		skip(t, "PostgreSQL is not installed (apt-get install postgresql: /usr/lib/postgresql/N/bin/initdb)")
	}
	s := &Server{t: t, bin: bin, port: freePort(t), password: randomHex(16)}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skip(t, "running as root and there is no postgres system user to run the PostgreSQL server as")
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			t.Fatalf("giving %s to the postgres user: %v", dir, err)
		}
	}
	pw := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pw, []byte(s.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.cred != nil {
		_ = os.Chown(pw, int(s.cred.Uid), int(s.cred.Gid))
	}
	out, err := s.command(filepath.Join(bin, "initdb"), "-D", s.dataDir(), "-U", User, "--pwfile", pw,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if o.tls {
		s.enableTLS(t)
	}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

// enableTLS issues the server's certificate, writes it and its key into
// the data directory (the key readable by the server's user only) and
// turns ssl on in postgresql.conf; the CA's PEM goes next to the cluster.
func (s *Server) enableTLS(t testing.TB) {
	t.Helper()
	ca, err := pki.NewCA("pgtest CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.EncodePEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	s.ca, s.caFile = ca, filepath.Join(s.dir, "ca.pem")
	if err := ca.WriteCertFile(s.caFile); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"server.crt", certPEM}, {"server.key", keyPEM}} {
		p := filepath.Join(s.dataDir(), f.name)
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if s.cred != nil {
			if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	conf, err := os.OpenFile(filepath.Join(s.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conf.Close()
	if _, err := conf.WriteString("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"); err != nil {
		t.Fatal(err)
	}
}

// CA is the CA that issued the server's certificate; nil without TLS.
func (s *Server) CA() *pki.CA { return s.ca }

// CAFile is the PEM file of CA, for a client's sslrootcert (tls.ca_file);
// "" without TLS.
func (s *Server) CAFile() string { return s.caFile }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...) //nolint:gosec // G204: Debian's PostgreSQL binaries, fixed arguments
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	return cmd
}

// Host is the loopback address the server listens on.
func (s *Server) Host() string { return "127.0.0.1" }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Password is User's password.
func (s *Server) Password() string { return s.password }

// SocketDir is the directory holding the server's unix socket.
func (s *Server) SocketDir() string { return s.dir }

var dbSeq atomic.Int64

// NewDatabase creates an empty database and returns its name.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), randomHex(4))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name).ReadAll(); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	return name
}

// Exec runs sql (one statement or several, separated by semicolons) on
// database as User, failing t on an error.
func (s *Server) Exec(t testing.TB, database, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, s.DSN(database))
	if err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// NewRole creates a login role (no other attribute: not a superuser, no
// CREATEDB, no CREATEROLE) with a random password and returns both.
func (s *Server) NewRole(t testing.TB) (name, password string) {
	t.Helper()
	name, password = fmt.Sprintf("r%d_%s", dbSeq.Add(1), randomHex(4)), randomHex(16)
	s.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", name, password))
	return name, password
}

// DSN is a connection string for database over TCP with the password.
func (s *Server) DSN(database string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", s.Host(), s.port, User, s.password, database)
}

// Stop shuts the server down (fast shutdown: open transactions are rolled
// back, committed ones are on disk) and waits for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
}

// Restart starts the server on its port and waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	logf := filepath.Join(s.dir, "postgres.log")
	lf, err := os.OpenFile(logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // G304: the log in the server's own temporary directory
	if err != nil {
		s.t.Fatal(err)
	}
	defer lf.Close()
	cmd := s.command(filepath.Join(s.bin, "postgres"), "-D", s.dataDir(), "-p", strconv.Itoa(s.port),
		"-k", s.dir, "-c", "listen_addresses="+s.Host(), "-c", "max_connections=100", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting postgres: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	var waitErr error
	go func(done chan struct{}) { waitErr = cmd.Wait(); close(done) }(s.done)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			log, _ := os.ReadFile(logf) //nolint:gosec // G304: the server's own log
			s.cmd = nil
			s.t.Fatalf("postgres exited at start-up: %v\n%s", waitErr, log)
		default:
		}
		if s.ready() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(logf) //nolint:gosec // G304: the server's own log
	s.t.Fatalf("postgres did not accept connections on %s:%d:\n%s", s.Host(), s.port, log)
}

func (s *Server) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return false
	}
	_ = c.Close(ctx)
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
