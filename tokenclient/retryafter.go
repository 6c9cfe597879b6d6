package tokenclient

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter caps what a provider can make us wait; a larger or garbled
// value is treated as this.
const maxRetryAfter = 10 * time.Minute

// ParseRetryAfter reads a Retry-After header: delta-seconds or an HTTP-date
// (RFC 9110 section 10.2.3). ok is false when the header is absent or unreadable.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		if d > maxRetryAfter {
			d = maxRetryAfter
		}
		return d, true
	}
	return 0, false
}
