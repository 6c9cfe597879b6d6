package config

import (
	"fmt"
	"strings"
	"time"
)

// FrequencyPerDay is the access budget of a consent (a Berlin Group
// consent's frequencyPerDay): at most Limit unattended calls per customer
// and bank day. A call is unattended when it lacks AttendedHeader; it counts
// when its method is in Methods and its path starts with one of Paths (any
// path when Paths is empty). The count resets at midnight in TimeZone.
type FrequencyPerDay struct {
	Limit    int    `yaml:"limit"`
	TimeZone string `yaml:"time_zone"`
	// Methods that count; GET by default.
	Methods []string `yaml:"methods"`
	// Paths are path prefixes that count (as the app requests them); all when empty.
	Paths []string `yaml:"paths"`
	// AttendedHeader, when present and not empty, marks a call made while
	// the customer is present: neither counted nor refused.
	AttendedHeader string `yaml:"attended_header"`
}

// Location loads TimeZone (validated).
func (f *FrequencyPerDay) Location() (*time.Location, error) {
	return time.LoadLocation(f.TimeZone)
}

// frequency checks routes[i].frequency_per_day (p is the route's path).
func (v *validator) frequency(p string, r *Route) {
	f := r.FrequencyPerDay
	if f == nil {
		return
	}
	fp := p + ".frequency_per_day"
	add := v.add
	if r.Token == nil || r.Token.Type != TokenAuthorizationCode {
		add(fp, "counts calls per customer consent, so it needs token.type %s; remove the block or make the route per customer", TokenAuthorizationCode)
	}
	if f.Limit < 1 {
		add(fp+".limit", "%d must be at least 1: the consent's frequencyPerDay (often %d)", f.Limit, DefaultFrequencyLimit)
	}
	if _, err := f.Location(); err != nil {
		add(fp+".time_zone", "%q is not a time zone this tokenproxy knows (%v); give an IANA name such as %s", f.TimeZone, err, DefaultFrequencyTimeZone)
	}
	for j, m := range f.Methods {
		if m == "" || strings.ContainsFunc(m, func(c rune) bool { return c < 'A' || c > 'Z' }) {
			add(fmt.Sprintf("%s.methods[%d]", fp, j), "%q is not an HTTP method; write e.g. GET", m)
		}
	}
	for j, pre := range f.Paths {
		if !strings.HasPrefix(pre, "/") {
			add(fmt.Sprintf("%s.paths[%d]", fp, j), "%q must be a path prefix starting with /, e.g. /v1/accounts", pre)
		}
	}
	if strings.ContainsAny(f.AttendedHeader, " :\t\r\n") {
		add(fp+".attended_header", "%q is not a header name", f.AttendedHeader)
	}
	// The count must be shared by every replica and survive a restart:
	// Redis, or a consent store that keeps counters (bbolt, PostgreSQL).
	if v.c.Store.Kind == StoreRedis {
		return
	}
	if cs := v.c.Consents; cs != nil && cs.Store.VaultKV != nil {
		add(fp, "the count of calls needs store.kind: redis or a bbolt or postgres consent store; Vault KV keeps no counters (a write per call would load Vault and its versions); set store.kind: redis with a store.redis block, or move consents to postgres")
	}
}
