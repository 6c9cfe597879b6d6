// Package e2eenv runs the released tokenproxy binary the way an operator
// does — a YAML configuration file, secrets in files, `tokenproxy run` — in
// front of an in-process Banking Circle emulator with real TLS, all on
// loopback. The hostile-client tests (package e2e) and the soak harness
// (tools/soak) share it.
package e2eenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// Build compiles cmd/tokenproxy into dir and returns the binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "tokenproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tokenproxy") //nolint:gosec // the output path is a directory the caller chose
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/tokenproxy: %w\n%s", err, out)
	}
	return bin, nil
}

// FreeAddr returns a loopback address with a port free at the time of the call.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Bank is a running Banking Circle emulator with its PKI and the client's
// credentials written as files, as an operator would hold them.
type Bank struct {
	Emu      *bankingcircle.Server
	CA       *pki.CA
	Dir      string
	CAFile   string // the bank's CA bundle (PEM)
	PFX      string // the client certificate (PKCS#12)
	Passcode string // the PKCS#12 passcode (also in PasscodeFile)
	Username string
	Password string
	// Files holding the passcode, user name and password.
	PasscodeFile, UsernameFile, PasswordFile string
}

// StartBank makes a CA, a server and a client certificate, starts the
// emulator (edit adjusts its Config) and writes the client's files to dir.
func StartBank(dir string, edit func(*bankingcircle.Config)) (*Bank, error) {
	ca, err := pki.NewCA("e2e bank CA")
	if err != nil {
		return nil, err
	}
	srv, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	b := &Bank{CA: ca, Dir: dir, Passcode: Random("pass"), Username: "m2m-" + Random("user")[:8], Password: Random("pw")}
	cfg := bankingcircle.Config{ServerCert: srv, ClientCAs: ca.CertPool(), Username: b.Username, Password: b.Password}
	if edit != nil {
		edit(&cfg)
	}
	if b.Emu, err = bankingcircle.New(cfg); err != nil {
		return nil, err
	}
	if err := b.Emu.Start(); err != nil {
		return nil, err
	}
	b.CAFile = filepath.Join(dir, "bank-ca.pem")
	if err := ca.WriteCertFile(b.CAFile); err != nil {
		return nil, errors.Join(err, b.Emu.Close())
	}
	if err := b.RotateClient("m2m client"); err != nil {
		return nil, errors.Join(err, b.Emu.Close())
	}
	b.PasscodeFile, b.UsernameFile, b.PasswordFile = filepath.Join(dir, "passcode"), filepath.Join(dir, "username"), filepath.Join(dir, "password")
	for path, v := range map[string]string{b.PasscodeFile: b.Passcode, b.UsernameFile: b.Username, b.PasswordFile: b.Password} {
		if err := pki.WriteFileAtomic(path, []byte(v), 0o600); err != nil {
			return nil, errors.Join(err, b.Emu.Close())
		}
	}
	return b, nil
}

// RotateClient issues a new client certificate named cn and replaces the
// PKCS#12 file atomically.
func (b *Bank) RotateClient(cn string) error {
	cert, err := b.CA.IssueClient(cn)
	if err != nil {
		return err
	}
	f, err := pki.WriteFiles(b.Dir, "client", cert, b.Passcode)
	if err != nil {
		return err
	}
	b.PFX = f.PFX
	return nil
}

// WriteBadClient replaces the PKCS#12 file with a version that does not
// decrypt (a wrong passcode): a bad rotation tokenproxy must ignore.
func (b *Bank) WriteBadClient() error {
	cert, err := b.CA.IssueClient("bad version")
	if err != nil {
		return err
	}
	pfx, err := pki.EncodePFX(cert, b.Passcode+"-wrong")
	if err != nil {
		return err
	}
	return pki.WriteFileAtomic(b.PFX, pfx, 0o600)
}

// Secrets returns every secret string of the bank's credentials, for scans
// of logs and metrics.
func (b *Bank) Secrets() []string { return []string{b.Passcode, b.Password} }

// Listeners are the addresses a configuration binds.
type Listeners struct{ Proxy, Admin, Local string }

// NewListeners picks three free loopback addresses.
func NewListeners() (Listeners, error) {
	var l Listeners
	for _, p := range []*string{&l.Proxy, &l.Admin, &l.Local} {
		a, err := FreeAddr()
		if err != nil {
			return l, err
		}
		*p = a
	}
	return l, nil
}

// ConfigOptions adjust the configuration Config writes.
type ConfigOptions struct {
	RatePerMinute, Burst int    // token.rate_limit
	Skew                 string // token.skew ("" for the default)
	// Token and Route are extra YAML lines (without indentation) appended
	// to the route's token block and to the route.
	Token, Route []string
	// Top is extra YAML appended at the top level (a vault: block).
	Top string
	// Password replaces the token password's reference (flow YAML, such
	// as "{vault: {path: p, field: password}}"); "" keeps the file.
	Password string
}

// Config returns a YAML configuration for one Banking Circle route against
// b, as an operator writes it.
func (b *Bank) Config(l Listeners, o ConfigOptions) string {
	y := fmt.Sprintf(`listen:
  proxy: %s
  admin: %s
shutdown_grace: 5s
log: {level: info, format: json}
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    upstream: %s
    listen: %s
    tls: {ca_file: %s}
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
      reload_interval: 1s
    token:
      url: %s%s
      username: {file: %s}
      password: {file: %s}
      rate_limit: {requests_per_minute: %d, burst: %d}
`, l.Proxy, l.Admin, b.Emu.APIURL(), l.Local, b.CAFile, b.PFX, b.PasscodeFile,
		b.Emu.AuthURL(), bankingcircle.AuthorizePath, b.UsernameFile, b.PasswordFile, o.RatePerMinute, o.Burst)
	if o.Password != "" {
		y = strings.Replace(y, "password: {file: "+b.PasswordFile+"}", "password: "+o.Password, 1)
	}
	if o.Skew != "" {
		y += "      skew: " + o.Skew + "\n"
	}
	for _, line := range o.Token {
		y += "      " + line + "\n"
	}
	for _, line := range o.Route {
		y += "    " + line + "\n"
	}
	return y + o.Top
}

// TLSClient returns a client that presents the current client certificate
// to the bank directly (no tokenproxy), for checks of the emulator itself.
func (b *Bank) TLSClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(b.Dir, "client.crt"), filepath.Join(b.Dir, "client.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: b.CA.CertPool(), Certificates: []tls.Certificate{cert}}}}, nil
}

// Close stops the emulator.
func (b *Bank) Close() error { return b.Emu.Close() }

// Proc is a running tokenproxy process.
type Proc struct {
	cmd  *exec.Cmd
	L    Listeners
	done chan struct{}
	err  error

	mu  sync.Mutex
	out bytes.Buffer // stdout and stderr: the log
}

type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Run writes yaml to dir/tokenproxy.yaml, starts `bin run --config` on it
// and waits until the admin listener reports ready.
func Run(ctx context.Context, bin, dir, yaml string, l Listeners) (*Proc, error) {
	path := filepath.Join(dir, "tokenproxy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return nil, fmt.Errorf("writing the configuration: %w", err)
	}
	p := &Proc{L: l, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", path) //nolint:gosec // the binary this package built
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	p.cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "NO_PROXY=")
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting tokenproxy: %w", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	c := &http.Client{Timeout: time.Second}
	for range 200 {
		select {
		case <-p.done:
			return nil, fmt.Errorf("tokenproxy exited at start-up: %w\n%s", p.err, p.Logs())
		case <-ctx.Done():
			p.Kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := c.Get("http://" + l.Admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
	}
	p.Kill()
	return nil, fmt.Errorf("tokenproxy not ready after 20 s\n%s", p.Logs())
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Logs returns everything the process wrote so far.
func (p *Proc) Logs() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.out.Bytes())
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to d for the process to exit and returns its exit error.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("tokenproxy still running after %s", d)
	}
}

// Kill stops the process (SIGKILL) and waits for it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to 15 s, then kills.
func (p *Proc) Stop() error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil //nolint:nilerr // already gone
	}
	if err := p.Wait(15 * time.Second); err != nil {
		p.Kill()
		return err
	}
	return nil
}

// Random returns a random string starting with prefix.
func Random(prefix string) string {
	return prefix + "-" + randHex(12)
}
