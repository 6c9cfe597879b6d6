package manifests

import (
	"net/url"
	"path"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The OAuth gateway: the consent API on a declared port behind the Service,
// only its callback exposed through the Ingress at callback_url, the consent
// store's secrets mounted from the Secret into tokenproxy, PostgreSQL reached
// through its Service, and Redis carrying the deletions between replicas.
func TestGatewayOAuth(t *testing.T) {
	docs := render(t, "gateway-oauth")
	_, raw := configOf(t, docs)
	var cfg struct {
		Store struct {
			Kind string `json:"kind"`
		} `json:"store"`
		Consents struct {
			Listen      string `json:"listen"`
			CallbackURL string `json:"callback_url"`
			Store       struct {
				Postgres *struct {
					Host     string            `json:"host"`
					Port     int               `json:"port"`
					Password map[string]string `json:"password"`
					Key      map[string]string `json:"key"`
					Migrate  bool              `json:"migrate_on_start"`
				} `json:"postgres"`
			} `json:"store"`
		} `json:"consents"`
	}
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	pg := cfg.Consents.Store.Postgres
	if pg == nil {
		t.Fatal("the configuration has no consents.store.postgres")
	}
	if cfg.Store.Kind != "redis" {
		t.Errorf("store.kind %q: replicas learn of a deleted consent through Redis; want redis", cfg.Store.Kind)
	}

	dep := find[*appsv1.Deployment](t, docs, "tokenproxy")
	spec := &dep.Spec.Template.Spec
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", dep.Spec.Replicas)
	}
	c, _ := FindProxy(spec)
	if c == nil {
		t.Fatal("no tokenproxy container")
	}

	// The consent API: containerPort "consent" is consents.listen's port, the
	// Service's port "consent" targets it.
	consentPort, err := port(cfg.Consents.Listen)
	if err != nil {
		t.Fatalf("consents.listen %q: %v", cfg.Consents.Listen, err)
	}
	if got := resolvePort(c, intstrFromName("consent")); got != consentPort {
		t.Errorf("containerPort consent is %d, consents.listen is %q", got, cfg.Consents.Listen)
	}
	svc := find[*corev1.Service](t, docs, "tokenproxy")
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Name == "consent" && resolvePort(c, p.TargetPort) == consentPort
	}) {
		t.Errorf("Service tokenproxy has no port consent targeting %d", consentPort)
	}

	// The Ingress exposes the callback and nothing else of the API.
	cb, err := url.Parse(cfg.Consents.CallbackURL)
	if err != nil || cb.Scheme != "https" {
		t.Fatalf("consents.callback_url %q must be an https:// URL", cfg.Consents.CallbackURL)
	}
	ing := find[*networkingv1.Ingress](t, docs, "tokenproxy-callback")
	if ing.Spec.DefaultBackend != nil {
		t.Errorf("Ingress has a default backend: it would expose more than the callback")
	}
	var served bool
	for _, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			continue
		}
		for _, p := range r.HTTP.Paths {
			if p.Path != cb.Path || p.PathType == nil || *p.PathType != networkingv1.PathTypeExact {
				t.Errorf("Ingress path %q: only %s, pathType Exact, may reach the consent API from outside", p.Path, cb.Path)
			}
			b := p.Backend.Service
			if b == nil || b.Name != svc.Name || b.Port.Name != "consent" {
				t.Errorf("Ingress path %q does not go to Service tokenproxy's consent port: %+v", p.Path, p.Backend)
			}
			served = served || (r.Host == cb.Hostname() && p.Path == cb.Path)
		}
	}
	if !served {
		t.Errorf("no Ingress rule serves the callback URL %s", cb)
	}
	if !slices.ContainsFunc(ing.Spec.TLS, func(tls networkingv1.IngressTLS) bool { return slices.Contains(tls.Hosts, cb.Hostname()) }) {
		t.Errorf("the Ingress has no TLS for %s", cb.Hostname())
	}

	// The password and the key are files of the Secret volume mounted into
	// tokenproxy; the PostgreSQL pod gets the password from that Secret and
	// never the key.
	secretOf := func(field string, ref map[string]string) string {
		f := ref["file"]
		if f == "" {
			t.Errorf("consents.store.postgres.%s is %v; the manifests mount it as a file", field, ref)
			return ""
		}
		for _, m := range c.VolumeMounts {
			if path.Dir(f) == m.MountPath {
				for _, v := range spec.Volumes {
					if v.Name == m.Name && v.Secret != nil {
						return v.Secret.SecretName
					}
				}
			}
		}
		t.Errorf("consents.store.postgres.%s: %s is in no Secret volume mounted into tokenproxy", field, f)
		return ""
	}
	secret := secretOf("password", pg.Password)
	if s := secretOf("key", pg.Key); s != secret {
		t.Errorf("password from Secret %q, key from %q: the documented command creates one Secret", secret, s)
	}
	pgPod := workloadPod(t, docs, pg.Host)
	var pgGetsPassword bool
	for _, v := range pgPod.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != secret {
			continue
		}
		if len(v.Secret.Items) == 0 {
			t.Errorf("PostgreSQL mounts all of Secret %s, the consent key included", secret)
		}
		for _, it := range v.Secret.Items {
			pgGetsPassword = pgGetsPassword || it.Key == path.Base(pg.Password["file"])
			if it.Key == path.Base(pg.Key["file"]) {
				t.Errorf("PostgreSQL mounts the consent key %q: values must be sealed with a key the database never sees", it.Key)
			}
		}
	}
	if !pgGetsPassword {
		t.Errorf("PostgreSQL does not get the role's password from Secret %s", secret)
	}

	// consents.store.postgres.host is the Service in front of the PostgreSQL pods.
	pgSvc := find[*corev1.Service](t, docs, pg.Host)
	if !labels.SelectorFromSet(pgSvc.Spec.Selector).Matches(labels.Set(pgPod.Labels)) {
		t.Errorf("Service %s does not select the PostgreSQL pods", pg.Host)
	}
	if !slices.ContainsFunc(pgSvc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == pg.Port }) {
		t.Errorf("Service %s has no port %d (consents.store.postgres.port)", pg.Host, pg.Port)
	}
	if !pg.Migrate {
		t.Errorf("the trial's replicas must migrate the schema themselves (migrate_on_start: true): nothing else runs `tokenproxy store migrate`")
	}
}
