package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// result is one app request as the app saw it.
type result struct {
	proc       int // index of the member it went through
	start, end time.Time
	status     int    // 0 on a transport error
	code       string // tokenproxy's X-Tokenproxy-Error, "" for an upstream answer
	err        error  // transport or body error
}

// Classes of outcome.
const (
	classServed   = "served"
	classCouldNot = "could-not-be-served"
	classDefect   = "DEFECT (could have been served)"
	classDrain    = "refused while draining"
)

// tokenCodes are tokenproxy's answers when it holds no valid token.
var tokenCodes = map[string]bool{
	"token_throttled": true, "token_unavailable": true, "credentials_unavailable": true,
}

// upstreamCodes are tokenproxy's answers when the bank's API failed.
var upstreamCodes = map[string]bool{
	"upstream_timeout": true, "upstream_failed": true, "upstream_unreachable": true,
}

// classify judges one result against the fault schedule and the drain.
func classify(r result, tl *timeline, sigterm time.Time) (class, why string) {
	switch {
	case r.status == http.StatusOK && r.err == nil:
		return classServed, ""
	case r.err != nil && !sigterm.IsZero() && r.end.After(sigterm):
		return classDrain, errKind(r.err)
	case r.code != "" && tokenCodes[r.code]:
		if ex := tl.excuse(r.start, r.end, true); ex != "" {
			return classCouldNot, r.code + " during " + ex
		}
		if tl.inVaultEmpty(r.start, r.end) {
			return classCouldNot, r.code + " while the restarted Vault did not yet hold the password"
		}
		return classDefect, r.code + " with the token endpoint healthy (" + tl.phaseAt(r.start) + ")"
	case r.code != "" && upstreamCodes[r.code]:
		if ex := tl.excuse(r.start, r.end, false); ex != "" {
			return classCouldNot, r.code + " during " + ex
		}
		return classDefect, r.code + " with the API healthy (" + tl.phaseAt(r.start) + ")"
	case r.code != "":
		return classDefect, r.code
	case r.status >= 500 || r.err != nil:
		// The bank's own 5xx passed through, or its body cut short.
		if ex := tl.excuse(r.start, r.end, false); ex != "" {
			return classCouldNot, fmt.Sprintf("upstream %d %s during %s", r.status, errKind(r.err), ex)
		}
		return classDefect, fmt.Sprintf("upstream %d %s with the API healthy (%s)", r.status, errKind(r.err), tl.phaseAt(r.start))
	default:
		return classDefect, fmt.Sprintf("status %d from the bank (%s)", r.status, tl.phaseAt(r.start))
	}
}

// errKind names an error without addresses, so that reasons group.
func errKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed early"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timeout"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// load runs one client per entry of clients (the index of the member it
// sends through) until stop closes; each waits pause between requests.
type load struct {
	proxies []string // per member, the proxy URL
	target  string
	clients []int
	pause   time.Duration
	stop    chan struct{}
	mu      sync.Mutex
	results []result
	sent    []atomic.Int64 // per member
}

func newLoad(ms []*member, clients []int, pause time.Duration, target string) *load {
	l := &load{target: target, clients: clients, pause: pause, stop: make(chan struct{}), sent: make([]atomic.Int64, len(ms))}
	for _, m := range ms {
		l.proxies = append(l.proxies, m.proxyURL)
	}
	return l
}

// sentTotal is the requests sent through every member.
func (l *load) sentTotal() int64 {
	var n int64
	for i := range l.sent {
		n += l.sent[i].Load()
	}
	return n
}

func (l *load) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, proc := range l.clients {
		pu, _ := url.Parse(l.proxies[proc])
		tr := &http.Transport{Proxy: http.ProxyURL(pu), MaxIdleConnsPerHost: 2}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(l.pause):
				}
				l.sent[proc].Add(1)
				r := l.one(client)
				r.proc = proc
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (l *load) one(c *http.Client) result {
	r := result{start: time.Now()}
	resp, err := c.Get(l.target)
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	r.code = resp.Header.Get("X-Tokenproxy-Error")
	body, err := io.ReadAll(resp.Body)
	r.end = time.Now()
	if err != nil {
		r.err = fmt.Errorf("reading the body: %w", err)
		return r
	}
	if r.status == http.StatusOK && !json.Valid(body) {
		r.err = errors.New("200 with a body that is not JSON")
	}
	if r.code != "" {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) != nil || e.Error != r.code {
			r.err = fmt.Errorf("tokenproxy error %s without its JSON body", r.code)
		}
	}
	return r
}

// tally counts results by class and by reason, overall and per member.
type tally struct {
	byClass  map[string]int
	byProc   []map[string]int
	byReason map[string]int
	defects  []string // first few defects, for the report
}

func count(results []result, j *judge, names []string) tally {
	t := tally{byClass: map[string]int{}, byReason: map[string]int{}, byProc: make([]map[string]int, len(names))}
	for i := range t.byProc {
		t.byProc[i] = map[string]int{}
	}
	for _, r := range results {
		class, why := j.classify(r)
		t.byClass[class]++
		t.byProc[r.proc][class]++
		if class != classServed {
			t.byReason[class+": "+why]++
		}
		if class == classDefect && len(t.defects) < 20 {
			t.defects = append(t.defects, r.start.Format("15:04:05.000")+" "+names[r.proc]+" "+why)
		}
	}
	return t
}

func (t tally) reasons() []string {
	var out []string
	for k, v := range t.byReason {
		out = append(out, fmt.Sprintf("%6d  %s", v, k))
	}
	sort.Strings(out)
	return out
}
