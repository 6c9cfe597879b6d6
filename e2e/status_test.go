package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/nodetest"
)

// chromiumPath is Debian's chromium, which the browser tests drive.
const chromiumPath = "/usr/bin/chromium"

// needBrowser skips a browser test where chromium is not installed, unless
// TOKENPROXY_REQUIRE_BROWSER is set (scripts/test.sh sets it: CI installs
// chromium, and a browser test that cannot run there fails).
func needBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("TOKENPROXY_REQUIRE_BROWSER") != "" {
			t.Fatalf("%s is missing and TOKENPROXY_REQUIRE_BROWSER is set: install Debian's chromium (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("skipping the browser test: %s is missing (apt-get install chromium; set TOKENPROXY_REQUIRE_BROWSER=1 to make this a failure)", chromiumPath)
	}
}

// statusScript opens the status page in headless chromium and prints what
// an operator reads there as JSON: the figures of each route, and the whole
// rendered page for the secret scan.
const statusScript = `import { chromium } from 'playwright-core';
const [url, routeName] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
  const resp = await page.goto(url, { waitUntil: 'load' });
  if (resp.status() !== 200) {
    console.log(JSON.stringify({ status: resp.status() }));
    process.exit(0);
  }
  const sec = page.locator('section.route[data-route="' + routeName + '"]');
  const text = async (sel) => (await sec.locator(sel).first().innerText()).trim();
  const cert = sec.locator('tr[data-certificate="client"]');
  const fetches = {};
  for (const el of await sec.locator('[data-field="token-fetches"] [data-result]').all()) {
    const [k, v] = (await el.innerText()).split(':');
    fetches[k.trim()] = Number(v);
  }
  const out = {
    status: resp.status(),
    contentType: resp.headers()['content-type'],
    title: await page.title(),
    requests: Number(await text('[data-field="requests-total"]')),
    errors: Number(await text('[data-field="requests-errors"]')),
    tokenCached: await text('[data-field="token-cached"]'),
    tokenHits: Number(await text('[data-field="token-hits"]')),
    tokenLastResult: await text('[data-field="token-last-result"]'),
    fetches,
    budget: await text('[data-field="budget-used"]'),
    budgetNext: await text('[data-field="budget-next"]'),
    certSource: (await cert.locator('[data-field="source"]').innerText()).trim(),
    certSubject: (await cert.locator('[data-field="subject"]').innerText()).trim(),
    certNotAfter: (await cert.locator('[data-field="not-after"]').innerText()).trim(),
    certExpiresSeconds: Number(await cert.locator('[data-field="expires-in"]').getAttribute('data-seconds')),
    certExpiresText: (await cert.locator('[data-field="expires-in"]').innerText()).trim(),
    lastReload: (await page.locator('[data-field="last-reload"]').innerText()).trim(),
    html: await page.content(),
    text: await page.locator('body').innerText(),
  };
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
`

// domFigures is what statusScript prints.
type domFigures struct {
	Status             int                `json:"status"`
	ContentType        string             `json:"contentType"`
	Title              string             `json:"title"`
	Requests           float64            `json:"requests"`
	Errors             float64            `json:"errors"`
	TokenCached        string             `json:"tokenCached"`
	TokenHits          float64            `json:"tokenHits"`
	TokenLastResult    string             `json:"tokenLastResult"`
	Fetches            map[string]float64 `json:"fetches"`
	Budget             string             `json:"budget"`
	BudgetNext         string             `json:"budgetNext"`
	CertSource         string             `json:"certSource"`
	CertSubject        string             `json:"certSubject"`
	CertNotAfter       string             `json:"certNotAfter"`
	CertExpiresSeconds float64            `json:"certExpiresSeconds"`
	CertExpiresText    string             `json:"certExpiresText"`
	LastReload         string             `json:"lastReload"`
	HTML               string             `json:"html"`
	Text               string             `json:"text"`
}

// TestStatusPageInBrowser runs the tokenproxy binary with a Banking Circle
// route (a PKCS#12 client certificate, a token from the emulator), sends
// requests through it, opens /status in headless chromium and checks that
// the figures an operator reads there are /metrics' figures, and that no
// secret is on the page or in /status.json. `tokenproxy status` prints the
// same figures.
func TestStatusPageInBrowser(t *testing.T) {
	needBrowser(t)
	node := nodetest.Node(t)
	script := nodetest.Script(t, "status.mjs", []byte(statusScript))
	e := start(t)
	const route = "bankingcircle"

	c := &http.Client{Timeout: 10 * time.Second}
	get := func(url string) (int, []byte) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	for range 4 {
		if code, body := get("http://" + e.proc.L.Local + "/api/v1/accounts?PageNumber=1&PageSize=1"); code != 200 {
			t.Fatalf("request through the route: %d %.200s", code, body)
		}
	}
	// A body over max_body_bytes is tokenproxy's own answer (413
	// body_too_large): an error on the page.
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.proc.L.Local+"/api/v1/payments", strings.NewReader(strings.Repeat("x", 10<<20+1)))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, "http://"+e.proc.L.Admin+"/status", route)
	cmd.Dir = filepath.Dir(script)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("the browser script: %v\n%s", err, stderr)
	}
	var dom domFigures
	if err := json.Unmarshal(out, &dom); err != nil {
		t.Fatalf("the browser script's output: %v\n%.500s", err, out)
	}
	_, metricsBody := get("http://" + e.proc.L.Admin + "/metrics")
	_, statusJSON := get("http://" + e.proc.L.Admin + "/status.json")
	m := parseMetrics(t, metricsBody)

	if dom.Status != 200 || !strings.HasPrefix(dom.ContentType, "text/html") || dom.Title != "tokenproxy status" {
		t.Fatalf("page: %d %q %q", dom.Status, dom.ContentType, dom.Title)
	}
	wantReq := m.sum("tokenproxy_requests_total", map[string]string{"route": route})
	if dom.Requests != wantReq || wantReq < 5 {
		t.Errorf("requests on the page %v, /metrics %v", dom.Requests, wantReq)
	}
	wantErr := wantReq - m.sum("tokenproxy_requests_total", map[string]string{"route": route, "error": ""})
	if dom.Errors != wantErr || wantErr < 1 {
		t.Errorf("errors on the page %v, /metrics %v", dom.Errors, wantErr)
	}
	if hits := m.sum("tokenproxy_token_cache_hits_total", map[string]string{"route": route}); dom.TokenHits != hits || hits < 3 {
		t.Errorf("token hits on the page %v, /metrics %v", dom.TokenHits, hits)
	}
	if ok := m.sum("tokenproxy_token_fetches_total", map[string]string{"route": route, "result": "ok"}); dom.Fetches["ok"] != ok || ok != 1 {
		t.Errorf("token fetches on the page %v, /metrics %v", dom.Fetches, ok)
	}
	if dom.TokenCached != "yes" || dom.TokenLastResult != "ok" {
		t.Errorf("token: cached %q, last result %q", dom.TokenCached, dom.TokenLastResult)
	}
	// The emulator's default budget: one token request counts, of the
	// configured 60 a minute; the next may go now.
	if dom.Budget != "1 / 60" || dom.BudgetNext != "now" {
		t.Errorf("budget %q, next %q", dom.Budget, dom.BudgetNext)
	}
	expiry := m.sum("tokenproxy_certificate_expiry_seconds", map[string]string{"route": route, "certificate": "client"})
	if math.Abs(dom.CertExpiresSeconds-expiry) > 30 || expiry < 3600 {
		t.Errorf("certificate expiry on the page %v s, /metrics %v s", dom.CertExpiresSeconds, expiry)
	}
	if dom.CertSource != "pkcs12" || !strings.Contains(dom.CertSubject, "m2m client") || dom.CertNotAfter == "" || !strings.HasPrefix(dom.CertExpiresText, "in ") {
		t.Errorf("certificate: source %q subject %q not after %q expires %q", dom.CertSource, dom.CertSubject, dom.CertNotAfter, dom.CertExpiresText)
	}
	if dom.LastReload != "never" {
		t.Errorf("last reload %q", dom.LastReload)
	}

	secrets := append(e.bank.Secrets(), e.bank.Emu.IssuedTokens()...)
	if len(e.bank.Emu.IssuedTokens()) == 0 {
		t.Fatal("the emulator issued no token")
	}
	key, err := os.ReadFile(filepath.Join(e.bank.Dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(key), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	for _, s := range secrets {
		for name, body := range map[string]string{"the page's DOM": dom.HTML, "the page's text": dom.Text, "/status.json": string(statusJSON)} {
			if strings.Contains(body, s) {
				t.Errorf("%s holds a secret (%d characters)", name, len(s))
			}
		}
	}
	for _, ref := range []string{e.bank.PasscodeFile, e.bank.UsernameFile, e.bank.PasswordFile, e.bank.PFX} {
		if strings.Contains(dom.HTML, ref) || strings.Contains(string(statusJSON), ref) {
			t.Errorf("the status page names a secret's file %s", ref)
		}
	}

	// `tokenproxy status` prints the same figures.
	bin, err := binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	table, err := exec.CommandContext(ctx, bin, "status", "--admin", e.proc.L.Admin).CombinedOutput()
	if err != nil {
		t.Fatalf("tokenproxy status: %v\n%s", err, table)
	}
	t.Logf("tokenproxy status:\n%s\n/status.json:\n%s", table, statusJSON)
	row := regexp.MustCompile(`(?m)^` + route + `\s+(\d+)\s+(\d+)\s+cached\s+in .*\s1/60\s+now\s*$`).FindSubmatch(table)
	if row == nil {
		t.Fatalf("tokenproxy status has no row for the route:\n%s", table)
	}
	if n, _ := strconv.ParseFloat(string(row[1]), 64); n != wantReq {
		t.Errorf("tokenproxy status: %s requests, /metrics %v\n%s", row[1], wantReq, table)
	}
	for _, s := range secrets {
		if strings.Contains(string(table), s) {
			t.Errorf("tokenproxy status prints a secret")
		}
	}
}

// metricSet is a /metrics exposition: each sample's labels and value.
type metricSet map[string][]sample

type sample struct {
	labels map[string]string
	value  float64
}

var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

func parseMetrics(t *testing.T, body []byte) metricSet {
	t.Helper()
	m := metricSet{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, labels := line, "", map[string]string{}
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			name, rest = line[:i], line[j+1:]
			for _, lm := range labelRE.FindAllStringSubmatch(line[i+1:j], -1) {
				labels[lm[1]] = lm[2]
			}
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[name] = append(m[name], sample{labels: labels, value: v})
	}
	return m
}

// sum adds the samples of name whose labels include match (a label absent
// from a sample counts as "").
func (m metricSet) sum(name string, match map[string]string) float64 {
	total := 0.0
	for _, s := range m[name] {
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			total += s.value
		}
	}
	return total
}
