package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one reading of the process's resources.
type sample struct {
	at                   time.Time
	process              string  // sidecar, gw1, gw2, ...
	goroutines, heap     float64 // from /metrics
	rss                  float64 // bytes, /proc/<pid>/status VmRSS
	fds                  float64 // entries of /proc/<pid>/fd
	tokenArrivalsMinute  int     // token requests the bank saw in the last 60 s
	served, failed, sent int64
}

// metric reads one unlabelled gauge from a Prometheus text exposition.
func metric(text, name string) float64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return -1
}

// scrape returns the admin /metrics text.
func scrape(ctx context.Context, admin string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// procStats reads VmRSS (bytes) and the number of open descriptors of pid.
func procStats(pid int) (rss, fds float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					rss = kb * 1024
				}
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		fds = float64(len(ents))
	}
	return rss, fds
}

// writeCSV writes the samples, one row each, for plotting.
func writeCSV(path string, start time.Time, samples []sample) error {
	var b strings.Builder
	b.WriteString("seconds,process,goroutines,heap_inuse_bytes,rss_bytes,open_fds,token_requests_last_minute,requests_sent,requests_served,requests_failed\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.0f,%s,%.0f,%.0f,%.0f,%.0f,%d,%d,%d,%d\n", s.at.Sub(start).Seconds(), s.process, s.goroutines, s.heap, s.rss, s.fds,
			s.tokenArrivalsMinute, s.sent, s.served, s.failed)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644) //nolint:gosec // a report, not a secret
}

// trend compares a resource after warm-up with the same at the end: the
// median of the quarter that follows warm-up against the median of the last
// quarter. It reports a leak when the end exceeds the start by more than
// ratio and by more than floor (so that small absolute noise is not one).
type trend struct {
	process, name   string
	start, mid, end float64
	warm, late      float64
	ratio, floor    float64
	leak            bool
}

func leakTrend(name string, samples []sample, get func(sample) float64, ratio, floor float64) trend {
	t := trend{name: name, ratio: ratio, floor: floor}
	n := len(samples)
	if n == 0 {
		return t
	}
	t.start, t.mid, t.end = get(samples[0]), get(samples[n/2]), get(samples[n-1])
	if n < 8 {
		return t
	}
	warmEnd := n / 4 // the first quarter is warm-up
	median := func(part []sample) float64 {
		v := make([]float64, len(part))
		for i, s := range part {
			v[i] = get(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	t.warm = median(samples[warmEnd : warmEnd+n/4])
	t.late = median(samples[n-n/4:])
	t.leak = t.late > t.warm*ratio && t.late-t.warm > floor
	return t
}
