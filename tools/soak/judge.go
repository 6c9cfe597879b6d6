package main

import (
	"time"
)

// judge classifies results with everything the run knows: the fault
// timeline, the drain, and for gateway replicas Redis's outages and the
// tokens the bank issued to the cluster.
type judge struct {
	tl      *timeline
	sigterm time.Time
	groups  []string // by result.proc
	outages []outage
	// clusterTokens are the tokens issued to the gateway replicas'
	// certificates.
	clusterTokens []tokenLife
}

// redisGrace is how long after Redis's return a token failure on a gateway
// replica is still put down to the outage (reconnection, rejoining).
const redisGrace = 5 * time.Second

// classify judges one result. On a gateway replica a token failure whose
// request overlapped a Redis outage is a DEFECT if the cluster held a valid
// token when it started (one the bank issued at least a second before both
// the outage and the request, and that had not expired): cached tokens must
// keep serving while Redis is down. Otherwise the outage excuses it.
func (j *judge) classify(r result) (class, why string) {
	if r.proc < len(j.groups) && j.groups[r.proc] == groupGateway && r.code != "" && tokenCodes[r.code] {
		for _, o := range j.outages {
			if !o.from.Before(r.end) || !o.to.Add(redisGrace).After(r.start) {
				continue
			}
			if t, ok := j.validAt(r.start, o.from); ok {
				return classDefect, r.code + " while Redis was down and a valid token existed (expiring " + t.exp.Format("15:04:05") + ")"
			}
			return classCouldNot, r.code + " during a Redis outage, no valid token held"
		}
	}
	return classify(r, j.tl, j.sigterm)
}

// validAt returns a cluster token that was held before both the outage and
// the request began and was still usable at the request's start: tokenproxy
// hands a token out only until the skew before its expiry (the default 30 s,
// capped at a quarter of its lifetime), so that it never expires on its way.
// The claims are whole seconds: iat is at most a second early, exp at most a
// second early (so a token counted usable was usable).
func (j *judge) validAt(start, outageFrom time.Time) (tokenLife, bool) {
	for _, t := range j.clusterTokens {
		held := t.iat.Add(2 * time.Second)
		if held.After(outageFrom) || held.After(start) {
			continue
		}
		skew := min(30*time.Second, t.exp.Sub(t.iat)/4)
		if t.exp.Add(-skew).After(start.Add(500 * time.Millisecond)) {
			return t, true
		}
	}
	return tokenLife{}, false
}
