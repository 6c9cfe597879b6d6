package manifests

import (
	"path"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The interception sidecar shares the generated CA certificate with the
// application through an emptyDir and points every client's trust variable
// at it.
func TestSidecarIntercept(t *testing.T) {
	docs := render(t, "sidecar-intercept")
	_, raw := configOf(t, docs)
	var cfg struct {
		Interception struct {
			CA struct {
				Generate struct {
					WriteCertTo string `json:"write_cert_to"`
				} `json:"generate"`
			} `json:"ca"`
		} `json:"interception"`
		Routes []struct {
			Intercept bool `json:"intercept"`
		} `json:"routes"`
	}
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	caFile := cfg.Interception.CA.Generate.WriteCertTo
	if caFile == "" || len(cfg.Routes) == 0 || !cfg.Routes[0].Intercept {
		t.Fatalf("the configuration does not generate an interception CA for an intercepting route")
	}
	spec := &find[*appsv1.Deployment](t, docs, "sample-app").Spec.Template.Spec
	proxy, _ := FindProxy(spec)
	shared := ""
	for _, m := range proxy.VolumeMounts {
		if m.MountPath == path.Dir(caFile) {
			shared = m.Name
		}
	}
	if shared == "" || !isEmptyDir(spec, shared) {
		t.Fatalf("tokenproxy does not write %s to an emptyDir", caFile)
	}
	for _, app := range spec.Containers {
		mounted := false
		for _, m := range app.VolumeMounts {
			mounted = mounted || (m.Name == shared && m.ReadOnly && m.MountPath == path.Dir(caFile))
		}
		if !mounted {
			t.Errorf("container %s does not mount the CA volume read-only at %s", app.Name, path.Dir(caFile))
		}
		env := map[string]string{}
		for _, e := range app.Env {
			env[e.Name] = e.Value
		}
		for _, k := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"} {
			if env[k] != caFile {
				t.Errorf("container %s: %s=%q, want %q", app.Name, k, env[k], caFile)
			}
		}
		for _, k := range []string{"HTTPS_PROXY", "https_proxy"} {
			if env[k] != env["HTTP_PROXY"] || env[k] == "" {
				t.Errorf("container %s: %s=%q, want the proxy %q", app.Name, k, env[k], env["HTTP_PROXY"])
			}
		}
	}
}
