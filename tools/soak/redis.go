package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

// redisDev is a private redis-server the gateway replicas share: loopback
// only, its own directory, no persistence, so a restart loses every key as
// a crashed cache would. The soak kills it (SIGKILL) and starts it again on
// the same port.
type redisDev struct {
	bin, dir, addr string
	cmd            *exec.Cmd
	exit           chan struct{}

	mu   sync.Mutex
	down []outage // when it was stopped, and started again
}

// outage is one stretch during which Redis was not serving.
type outage struct{ from, to time.Time } // to is zero while still down

// startRedis starts a redis-server on a free loopback port.
func startRedis(dir string) (*redisDev, error) {
	bin := redistest.Binary()
	if bin == "" {
		return nil, fmt.Errorf("redis-server is not installed (it is needed for -replicas > 1)")
	}
	addr, err := e2eenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	r := &redisDev{bin: bin, dir: filepath.Join(dir, "redis"), addr: addr}
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return nil, err
	}
	return r, r.start()
}

func (r *redisDev) start() error {
	port := r.addr[strings.LastIndexByte(r.addr, ':')+1:]
	r.cmd = exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--dir", r.dir, //nolint:gosec // the installed redis-server, fixed arguments
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--logfile", filepath.Join(r.dir, "redis.log"))
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	r.exit = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.exit) }()
	for range 200 {
		if r.ping() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("redis-server at %s did not answer within 10 s", r.addr)
}

func (r *redisDev) ping() bool {
	c, err := net.DialTimeout("tcp", r.addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// stop kills the server, as a crash would, and waits for it.
func (r *redisDev) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exit
}

// cycle stops Redis at each of the offsets after start for down, then
// starts it again, until ctx ends.
func (r *redisDev) cycle(ctx context.Context, start time.Time, at []time.Duration, down time.Duration, tl *timeline) {
	for _, off := range at {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(off))):
		}
		r.stop()
		now := time.Now()
		r.mu.Lock()
		r.down = append(r.down, outage{from: now})
		r.mu.Unlock()
		tl.add(event{at: now, note: "redis stopped (SIGKILL, data lost)"})
		select {
		case <-ctx.Done(): // Redis comes back for the drain
		case <-time.After(down):
		}
		err := r.start()
		now = time.Now()
		r.mu.Lock()
		r.down[len(r.down)-1].to = now
		r.mu.Unlock()
		if err != nil {
			tl.add(event{at: now, note: "redis restart failed: " + err.Error()})
			return
		}
		tl.add(event{at: now, note: "redis restarted"})
	}
}

// outages returns the stretches Redis was down; an open one ends now.
func (r *redisDev) outages() []outage {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]outage, len(r.down))
	for i, o := range r.down {
		if o.to.IsZero() {
			o.to = time.Now()
		}
		out[i] = o
	}
	return out
}
