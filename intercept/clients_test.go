package intercept

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// nodeConnect opens the tunnel by hand, since Node 20's core ignores
// HTTPS_PROXY, and then speaks TLS over it trusting NODE_EXTRA_CA_CERTS.
const nodeConnect = `
const http = require('http'), tls = require('tls');
const p = new URL(process.env.HTTPS_PROXY);
const auth = 'Basic ' + Buffer.from(decodeURIComponent(p.username) + ':' + decodeURIComponent(p.password)).toString('base64');
http.request({host: p.hostname, port: p.port, method: 'CONNECT', path: 'bank.example:443',
              headers: {'Proxy-Authorization': auth}})
  .on('connect', (res, socket) => {
    if (res.statusCode !== 200) { console.log('CONNECT ' + res.statusCode); process.exit(1); }
    const s = tls.connect({socket, servername: 'bank.example', ALPNProtocols: ['http/1.1']}, () => {
      s.write('GET /api/v1/accounts HTTP/1.1\r\nHost: bank.example\r\nConnection: close\r\n\r\n');
    });
    // goproxy keeps a tunnel open after a response; stop once the body is complete.
    let out = '';
    s.on('data', d => {
      out += d;
      const i = out.indexOf('\r\n\r\n'), m = /content-length: *(\d+)/i.exec(out);
      if (i >= 0 && m && out.length - i - 4 >= Number(m[1])) { console.log(out); process.exit(0); }
    });
    s.on('error', e => { console.log('TLS ' + e.message); process.exit(1); });
  })
  .on('error', e => { console.log(e.message); process.exit(1); })
  .end();
setTimeout(() => { console.log('timed out'); process.exit(2); }, 10000);
`

func TestGoproxyInterceptionWithLanguageClients(t *testing.T) {
	f := newFixture(t)
	proxy := strings.Replace(f.proxyURL, "http://", "http://"+callerName+":"+callerPass+"@", 1)
	tests := []struct {
		name string
		argv []string
		env  []string
	}{
		{"python requests with REQUESTS_CA_BUNDLE", []string{"python3", "-c",
			"import requests; r = requests.get('https://bank.example/api/v1/accounts', timeout=10); print(r.status_code, r.text)"},
			[]string{"REQUESTS_CA_BUNDLE=" + f.caFile}},
		{"python urllib with SSL_CERT_FILE", []string{"python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('https://bank.example/api/v1/accounts', timeout=10).read().decode())"},
			[]string{"SSL_CERT_FILE=" + f.caFile}},
		{"node with NODE_EXTRA_CA_CERTS", []string{"node", "-e", nodeConnect},
			[]string{"NODE_EXTRA_CA_CERTS=" + f.caFile}},
		{"curl with CURL_CA_BUNDLE and HTTPS_PROXY", []string{"curl", "-sS", "--max-time", "10", "https://bank.example/api/v1/accounts"},
			[]string{"CURL_CA_BUNDLE=" + f.caFile}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.argv[0]); err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("%s is needed", tc.argv[0])
				}
				t.Skipf("%s not installed", tc.argv[0])
			}
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Env = append(cleanEnv(), append(tc.env, "HTTPS_PROXY="+proxy, "https_proxy="+proxy)...)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "DK5000400440116243") {
				t.Fatalf("%v: %v\n%s", tc.argv[0], err, out)
			}
			seen := <-f.bankSeen
			if seen.Header.Get("Authorization") != "Bearer route-token" {
				t.Fatalf("bank saw %v", seen.Header)
			}
		})
	}
}

// cleanEnv is the environment without proxy and trust settings of the host.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
			"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS":
			continue
		}
		out = append(out, kv)
	}
	return out
}
