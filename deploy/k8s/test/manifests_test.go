package manifests

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// k8sDir is deploy/k8s, the parent of this module.
const k8sDir = ".."

// overlays are the kustomizations users apply; each must render.
var overlays = []string{"base", "sidecar", "gateway", "vault-reviewer", "sidecar-intercept", "gateway-intercept", "gateway-oauth"}

// gatewayOverlays are the overlays that run tokenproxy as a shared egress
// gateway; each gets the gateway checks.
var gatewayOverlays = []string{"gateway", "gateway-intercept", "gateway-oauth"}

// ---- rendering -----------------------------------------------------------

type renderResult struct {
	out  []byte
	docs []Document
	err  error
}

var (
	renderMu    sync.Mutex
	renderCache = map[string]*renderResult{}
)

// renderer returns the command that renders a kustomization directory:
// `kubectl kustomize DIR`, or `kustomize build DIR` where only the standalone
// kustomize is installed.
func renderer(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("kubectl"); err == nil {
		return []string{p, "kustomize"}
	}
	if p, err := exec.LookPath("kustomize"); err == nil {
		return []string{p, "build"}
	}
	t.Fatalf("neither kubectl nor kustomize is on PATH; .ci/manifests.sh installs kustomize when kubectl is missing")
	return nil
}

func kustomize(t *testing.T, dir string) ([]byte, error) {
	t.Helper()
	args := append(renderer(t), dir)
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return out, nil
}

// render returns the strictly decoded output of `kubectl kustomize deploy/k8s/<overlay>`,
// rendering each overlay once per test run.
func render(t *testing.T, overlay string) []Document {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	r, ok := renderCache[overlay]
	if !ok {
		r = &renderResult{}
		r.out, r.err = kustomize(t, filepath.Join(k8sDir, overlay))
		if r.err == nil {
			r.docs, r.err = DecodeAll(overlay, r.out)
		}
		renderCache[overlay] = r
	}
	if r.err != nil {
		t.Fatalf("kubectl kustomize deploy/k8s/%s: %v", overlay, r.err)
	}
	return r.docs
}

func find[T any](t *testing.T, docs []Document, name string) T {
	t.Helper()
	var zero T
	for _, d := range docs {
		if o, ok := d.Object.(T); ok {
			if m, _ := metaOf(d.Object); m != nil && m.GetName() == name {
				return o
			}
		}
	}
	t.Fatalf("no %T named %q in %d documents", zero, name, len(docs))
	return zero
}

func configOf(t *testing.T, docs []Document) (Config, string) {
	t.Helper()
	cm := find[*corev1.ConfigMap](t, docs, ConfigMapName)
	raw, ok := cm.Data[ConfigKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", ConfigMapName, ConfigKey)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		t.Fatalf("ConfigMap %s/%s is not YAML: %v", ConfigMapName, ConfigKey, err)
	}
	return cfg, raw
}

// ---- every file, every overlay ------------------------------------------

func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(k8sDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(k8sDir, "test") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		if d.Name() == "kustomization.yaml" || d.Name() == "kustomization.yml" {
			return nil
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", k8sDir, err)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests under %s", k8sDir)
	}
	return files
}

func TestRawManifestsDecodeStrictly(t *testing.T) {
	for _, f := range manifestFiles(t) {
		rel, _ := filepath.Rel(k8sDir, f)
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			docs, err := DecodeAll(rel, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) == 0 {
				t.Fatalf("%s holds no document", rel)
			}
		})
	}
}

// TestEveryManifestIsUsed catches a manifest file that no kustomization lists,
// which would be checked here but never deployed.
func TestEveryManifestIsUsed(t *testing.T) {
	used := map[string]bool{}
	for _, o := range overlays {
		markUsed(t, filepath.Join(k8sDir, o), used)
	}
	for _, f := range manifestFiles(t) {
		if !used[f] {
			t.Errorf("%s is listed in no kustomization's resources or patches", f)
		}
	}
}

// markUsed marks the resources and patches of dir's kustomization, and of
// the components it names, as used.
func markUsed(t *testing.T, dir string, used map[string]bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources  []string `json:"resources"`
		Components []string `json:"components"`
		Patches    []struct {
			Path string `json:"path"`
		} `json:"patches"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	for _, r := range k.Resources {
		used[filepath.Join(dir, r)] = true
	}
	for _, p := range k.Patches {
		used[filepath.Join(dir, p.Path)] = true
	}
	for _, c := range k.Components {
		markUsed(t, filepath.Join(dir, c), used)
	}
}

func TestOverlaysRenderAndDecodeStrictly(t *testing.T) {
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(k8sDir, e.Name(), "kustomization.yaml")); err == nil {
			found = append(found, e.Name())
		}
	}
	slices.Sort(found)
	want := slices.Sorted(slices.Values(overlays))
	if !slices.Equal(found, want) {
		t.Fatalf("kustomizations under deploy/k8s are %v, the test knows %v: update the overlays list", found, want)
	}
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) {
			docs := render(t, o)
			if len(docs) == 0 {
				t.Fatal("rendered nothing")
			}
			for _, d := range docs {
				t.Logf("%s %s", d.GVK.Kind, d.Name())
			}
		})
	}
}

// ---- security posture ----------------------------------------------------

func TestWorkloadPosture(t *testing.T) {
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) {
			docs := render(t, o)
			for _, d := range docs {
				tmpl, ok := PodOf(d)
				if !ok {
					continue
				}
				name := d.GVK.Kind + " " + d.Name()
				problems := CheckPod(name, &tmpl.Spec)
				if c, _ := FindProxy(&tmpl.Spec); c != nil {
					cfg, _ := configOf(t, docs)
					problems = append(problems, CheckProxy(name, &tmpl.Spec, cfg)...)
				}
				for _, p := range problems {
					t.Error(p)
				}
			}
		})
	}
}

func TestServiceAccountsAndRBAC(t *testing.T) {
	for _, o := range overlays {
		for _, d := range render(t, o) {
			switch obj := d.Object.(type) {
			case *corev1.ServiceAccount:
				if obj.AutomountServiceAccountToken == nil || *obj.AutomountServiceAccountToken {
					t.Errorf("%s: ServiceAccount %s must set automountServiceAccountToken: false", o, d.Name())
				}
			case *rbacv1.ClusterRoleBinding:
				if obj.RoleRef.Kind != "ClusterRole" || obj.RoleRef.Name != "system:auth-delegator" {
					t.Errorf("%s: ClusterRoleBinding %s grants %s %s; only system:auth-delegator for Vault's token reviewer is expected",
						o, d.Name(), obj.RoleRef.Kind, obj.RoleRef.Name)
				}
				for _, s := range obj.Subjects {
					if s.Kind == "ServiceAccount" && s.Name == "tokenproxy" {
						t.Errorf("%s: ClusterRoleBinding %s binds tokenproxy's own ServiceAccount", o, d.Name())
					}
				}
			case *rbacv1.ClusterRole, *rbacv1.Role, *rbacv1.RoleBinding:
				t.Errorf("%s: %s %s: tokenproxy needs no Kubernetes API permission", o, d.GVK.Kind, d.Name())
			}
		}
	}
}

// ---- the sidecar -----------------------------------------------------------

func TestSidecar(t *testing.T) {
	docs := render(t, "sidecar")
	cfg, _ := configOf(t, docs)
	dep := find[*appsv1.Deployment](t, docs, "sample-app")
	spec := &dep.Spec.Template.Spec

	c, sidecar := FindProxy(spec)
	if c == nil || !sidecar {
		t.Fatalf("tokenproxy must be a native sidecar in initContainers")
	}
	host, proxyPort, err := net.SplitHostPort(cfg.Listen.Proxy)
	if err != nil {
		t.Fatalf("listen.proxy %q: %v", cfg.Listen.Proxy, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("listen.proxy %q: a sidecar's proxy must listen on loopback only", cfg.Listen.Proxy)
	}
	for _, p := range c.Ports {
		if p.ContainerPort == mustAtoi(t, proxyPort) {
			t.Errorf("containerPort %d declares the loopback-only proxy port", p.ContainerPort)
		}
	}
	want := "http://" + cfg.Listen.Proxy
	if len(spec.Containers) == 0 {
		t.Fatal("no application container")
	}
	for _, app := range spec.Containers {
		env := map[string]string{}
		for _, e := range app.Env {
			env[e.Name] = e.Value
		}
		for _, k := range []string{"HTTP_PROXY", "http_proxy"} {
			if env[k] != want {
				t.Errorf("container %s: %s=%q, want %q (listen.proxy)", app.Name, k, env[k], want)
			}
		}
		if env["NO_PROXY"] == "" || env["no_proxy"] == "" {
			t.Errorf("container %s: NO_PROXY/no_proxy unset: in-cluster calls would hit the proxy", app.Name)
		}
	}
}

func mustAtoi(t *testing.T, s string) int32 {
	t.Helper()
	p, err := port(net.JoinHostPort("", s))
	if err != nil {
		t.Fatal(err)
	}
	return int32(p)
}

// ---- the gateway ---------------------------------------------------------

func TestGateway(t *testing.T) {
	for _, o := range gatewayOverlays {
		t.Run(o, func(t *testing.T) { checkGateway(t, render(t, o)) })
	}
}

func checkGateway(t *testing.T, docs []Document) {
	t.Helper()
	cfg, raw := configOf(t, docs)
	dep := find[*appsv1.Deployment](t, docs, "tokenproxy")
	podLabels := labels.Set(dep.Spec.Template.Labels)
	spec := &dep.Spec.Template.Spec

	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("replicas must be at least 2")
	}
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("Deployment selector does not match its pods: %v", err)
	}
	var hostSpread bool
	for _, tsc := range spec.TopologySpreadConstraints {
		s, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
		if err != nil || !s.Matches(podLabels) {
			t.Errorf("topology spread on %s does not select the gateway pods", tsc.TopologyKey)
		}
		hostSpread = hostSpread || (tsc.TopologyKey == "kubernetes.io/hostname" && tsc.WhenUnsatisfiable == corev1.DoNotSchedule)
	}
	if !hostSpread {
		t.Errorf("replicas must be kept on different nodes (hostname spread, DoNotSchedule)")
	}

	pdb := find[*policyv1.PodDisruptionBudget](t, docs, "tokenproxy")
	if s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !s.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget does not select the gateway pods")
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Errorf("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}
	if dep.Spec.Replicas != nil {
		checkDisruptionBudget(t, pdb, int(*dep.Spec.Replicas))
	}

	proxyPort, err := port(cfg.Listen.Proxy)
	if err != nil {
		t.Fatalf("listen.proxy %q: %v", cfg.Listen.Proxy, err)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen.Proxy); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("listen.proxy %q: a gateway must listen beyond loopback", cfg.Listen.Proxy)
	}
	c, _ := FindProxy(spec)
	if c == nil {
		t.Fatal("no tokenproxy container")
	}
	svc := find[*corev1.Service](t, docs, "tokenproxy")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service does not select the gateway pods")
	}
	var svcProxy bool
	for _, p := range svc.Spec.Ports {
		if p.Name == "proxy" {
			svcProxy = true
			if got := resolvePort(c, p.TargetPort); got != proxyPort {
				t.Errorf("Service port proxy targets %d, listen.proxy is %q", got, cfg.Listen.Proxy)
			}
		}
	}
	if !svcProxy {
		t.Errorf("Service has no port named proxy")
	}

	// Every route of a listening-beyond-loopback proxy names its callers.
	var routes struct {
		Routes []map[string]any `json:"routes"`
		Store  struct {
			Redis *struct {
				MaxReplicas int `json:"max_replicas"`
			} `json:"redis"`
		} `json:"store"`
	}
	if err := yaml.Unmarshal([]byte(raw), &routes); err != nil {
		t.Fatal(err)
	}
	// The shared store's fallback budget divides by max_replicas: it must
	// count every pod that can run at once, the rollout's surge included.
	if r := routes.Store.Redis; r != nil && dep.Spec.Replicas != nil {
		surge := 0
		if ru := dep.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
			surge, _ = intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, int(*dep.Spec.Replicas), true)
		}
		if r.MaxReplicas < int(*dep.Spec.Replicas)+surge {
			t.Errorf("store.redis.max_replicas %d is below replicas %d + maxSurge %d", r.MaxReplicas, *dep.Spec.Replicas, surge)
		}
	}
	if len(routes.Routes) == 0 {
		t.Errorf("gateway configuration has no route")
	}
	for _, r := range routes.Routes {
		if r["allow"] == nil {
			t.Errorf("route %v has no allow list: every pod that reaches the gateway could use it", r["name"])
		}
	}

	// Vault: an audience-bound, short-lived projected token, mounted.
	var vaultToken string
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken == nil {
				continue
			}
			vaultToken = v.Name
			if s.ServiceAccountToken.Audience != "vault" {
				t.Errorf("projected token audience %q, want vault (a token the API server would not accept)", s.ServiceAccountToken.Audience)
			}
			if s.ServiceAccountToken.ExpirationSeconds == nil || *s.ServiceAccountToken.ExpirationSeconds > 3600 {
				t.Errorf("projected token must expire within an hour")
			}
		}
	}
	if vaultToken == "" {
		t.Errorf("no projected ServiceAccount token for Vault's Kubernetes auth")
	} else if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vaultToken }) {
		t.Errorf("the Vault token volume %q is not mounted into tokenproxy", vaultToken)
	}

	np := find[*networkingv1.NetworkPolicy](t, docs, "tokenproxy")
	if s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || !s.Matches(podLabels) {
		t.Errorf("NetworkPolicy tokenproxy does not select the gateway pods")
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy tokenproxy must restrict both ingress and egress, has %v", np.Spec.PolicyTypes)
	}
	checkNetworkPolicies(t, policiesFor(docs, podLabels), c)
}

// checkDisruptionBudget: a drain may take at least one of the gateway's
// replicas, and always leaves at least two serving.
func checkDisruptionBudget(t *testing.T, pdb *policyv1.PodDisruptionBudget, replicas int) {
	t.Helper()
	allowed := -1
	switch {
	case pdb.Spec.MaxUnavailable != nil:
		allowed, _ = intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, replicas, true)
	case pdb.Spec.MinAvailable != nil:
		minAvail, _ := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, replicas, true)
		allowed = replicas - minAvail
	}
	if allowed < 1 {
		t.Errorf("PodDisruptionBudget lets no replica of %d be evicted: node drains would block", replicas)
	}
	if replicas-allowed < 2 {
		t.Errorf("PodDisruptionBudget lets %d of %d replicas be evicted at once, leaving fewer than 2", allowed, replicas)
	}
}

// policiesFor returns the NetworkPolicies that select pods with podLabels;
// policies add up, so these together are what the pods may do.
func policiesFor(docs []Document, podLabels labels.Set) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, d := range docs {
		np, ok := d.Object.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		if s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err == nil && s.Matches(podLabels) {
			out = append(out, np)
		}
	}
	return out
}

// checkNetworkPolicies checks the NetworkPolicies that select the gateway
// pods: the proxy port admits only client-labelled pods, and egress goes to
// the expected ports only.
func checkNetworkPolicies(t *testing.T, nps []*networkingv1.NetworkPolicy, c *corev1.Container) {
	t.Helper()
	proxyPort := resolvePort(c, intstrFromName("proxy"))
	var proxyRule bool
	var ingress []networkingv1.NetworkPolicyIngressRule
	var egress []networkingv1.NetworkPolicyEgressRule
	for _, np := range nps {
		ingress = append(ingress, np.Spec.Ingress...)
		egress = append(egress, np.Spec.Egress...)
	}
	for _, r := range ingress {
		if len(r.Ports) == 0 {
			t.Errorf("ingress rule without ports admits every port")
		}
		for _, p := range r.Ports {
			if p.Port == nil || resolvePort(c, *p.Port) != proxyPort {
				continue
			}
			proxyRule = true
			if len(r.From) == 0 {
				t.Errorf("proxy port open to everyone")
			}
			for _, peer := range r.From {
				if peer.IPBlock != nil || peer.PodSelector == nil || peer.PodSelector.MatchLabels["tokenproxy.io/client"] != "true" {
					t.Errorf("proxy port admits a peer other than pods labelled tokenproxy.io/client=true: %+v", peer)
				}
			}
		}
	}
	if !proxyRule {
		t.Errorf("no ingress rule for the proxy port")
	}
	allowed := []int{53, 443, 6379, 8200, 5432} // DNS, the banks, Redis, Vault, PostgreSQL
	for _, r := range egress {
		if len(r.Ports) == 0 {
			t.Errorf("egress rule without ports allows every port")
		}
		for _, p := range r.Ports {
			if p.Port == nil || !slices.Contains(allowed, p.Port.IntValue()) {
				t.Errorf("egress to port %v; only %v are expected", p.Port, allowed)
			}
		}
	}
}

// ---- the checks themselves ------------------------------------------------

const goodDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  replicas: 2
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: app
          image: example/app:1
          securityContext:
            runAsNonRoot: true
            runAsUser: 10001
`

func TestDecodeStrictRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"accepts the valid document", goodDeployment, ""},
		{"unknown field", strings.Replace(goodDeployment, "runAsUser: 10001", "runAsUser: 10001\n            readOnlyRootFilesytem: true", 1), `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem"`},
		{"unknown top-level field", goodDeployment + "status2: {}\n", `unknown field "status2"`},
		{"field in the wrong case", strings.Replace(goodDeployment, "runAsUser:", "RunAsUser:", 1), `unknown field "spec.template.spec.containers[0].securityContext.RunAsUser"`},
		{"field at the wrong level", strings.Replace(goodDeployment, "      automountServiceAccountToken: false", "      runAsNonRoot: true", 1), `unknown field "spec.template.spec.runAsNonRoot"`},
		{"duplicate key", strings.Replace(goodDeployment, "  replicas: 2", "  replicas: 2\n  replicas: 3", 1), `"replicas" already set`},
		{"wrong type", strings.Replace(goodDeployment, "replicas: 2", "replicas: two", 1), "cannot unmarshal"},
		{"deprecated version", strings.Replace(strings.Replace(goodDeployment, "apps/v1", "policy/v1beta1", 1), "Deployment", "PodDisruptionBudget", 1), "not a kind these manifests may use"},
		{"no kind", strings.Replace(goodDeployment, "kind: Deployment", "", 1), "no apiVersion or kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeStrict([]byte(tc.doc))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid document rejected: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want an error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestRenderedUnknownFieldRejected shows why the rendered output is decoded
// too: kustomize passes an unknown field through untouched.
func TestRenderedUnknownFieldRejected(t *testing.T) {
	dir := t.TempDir()
	bad := strings.Replace(goodDeployment, "runAsUser: 10001", "runAsUser: 10001\n            readOnlyRootFilesytem: true", 1)
	for name, data := range map[string]string{
		"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: demo\nresources: [deployment.yaml]\n",
		"deployment.yaml":    bad,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := kustomize(t, dir)
	if err != nil {
		t.Fatalf("kustomize rejected it itself (then this test is moot): %v", err)
	}
	if !strings.Contains(string(out), "readOnlyRootFilesytem") {
		t.Fatalf("kustomize dropped the unknown field:\n%s", out)
	}
	if _, err := DecodeAll("rendered", out); err == nil || !strings.Contains(err.Error(), `unknown field`) {
		t.Fatalf("rendered output with an unknown field decoded: %v", err)
	}
}

// TestPostureCheckCatches weakens the real gateway Deployment one way at a
// time and expects the posture checks to say so.
func TestPostureCheckCatches(t *testing.T) {
	docs := render(t, "gateway")
	cfg, _ := configOf(t, docs)
	orig := find[*appsv1.Deployment](t, docs, "tokenproxy")
	tests := []struct {
		name   string
		mutate func(*corev1.PodSpec, *corev1.Container)
		want   string
	}{
		{"writable root filesystem", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.ReadOnlyRootFilesystem = ptr(false) }, "readOnlyRootFilesystem must be true"},
		{"root", func(s *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.RunAsUser = ptr(int64(0))
			c.SecurityContext.RunAsNonRoot = nil
			s.SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot must be true"},
		{"privileged", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.Privileged = ptr(true) }, "must not be privileged"},
		{"capability added", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "adds capabilities"},
		{"capabilities kept", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.Capabilities = nil }, "capabilities must drop ALL"},
		{"escalation", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.AllowPrivilegeEscalation = nil }, "allowPrivilegeEscalation must be false"},
		{"no liveness probe", func(_ *corev1.PodSpec, c *corev1.Container) { c.LivenessProbe = nil }, "no liveness probe"},
		{"probe on the proxy port", func(_ *corev1.PodSpec, c *corev1.Container) { c.ReadinessProbe.HTTPGet.Port = intstrFromName("proxy") }, "want the admin port"},
		{"exec preStop", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "10"}}}
		}, "needs a shell"},
		{"grace too short", func(s *corev1.PodSpec, _ *corev1.Container) { s.TerminationGracePeriodSeconds = ptr(int64(25)) }, "leaves no room"},
		{"service account token", func(s *corev1.PodSpec, _ *corev1.Container) { s.AutomountServiceAccountToken = nil }, "automountServiceAccountToken"},
		{"subPath", func(_ *corev1.PodSpec, c *corev1.Container) { c.VolumeMounts[0].SubPath = "config.yaml" }, "uses subPath"},
		{"no memory limit", func(_ *corev1.PodSpec, c *corev1.Container) { delete(c.Resources.Limits, corev1.ResourceMemory) }, "no memory limit"},
		{"world-readable token", func(s *corev1.PodSpec, _ *corev1.Container) {
			for i := range s.Volumes {
				if s.Volumes[i].Projected != nil {
					s.Volumes[i].Projected.DefaultMode = ptr(int32(0o644))
				}
			}
		}, "defaultMode must be set"},
		{"app mounts credentials", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.Containers = append(s.Containers, corev1.Container{Name: "app", VolumeMounts: []corev1.VolumeMount{{Name: "vault-token"}}})
		}, "only tokenproxy may read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := orig.DeepCopy()
			spec := &d.Spec.Template.Spec
			c, _ := FindProxy(spec)
			tc.mutate(spec, c)
			problems := append(CheckPod("gateway", spec), CheckProxy("gateway", spec, cfg)...)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Fatalf("no problem containing %q; got %q", tc.want, problems)
			}
		})
	}
	// And the unmodified Deployment passes.
	if p := append(CheckPod("gateway", &orig.Spec.Template.Spec), CheckProxy("gateway", &orig.Spec.Template.Spec, cfg)...); len(p) > 0 {
		t.Fatalf("unmodified gateway Deployment: %q", p)
	}
}

// TestConfigMapsValidate runs `tokenproxy validate` on every configuration the
// overlays ship, when TOKENPROXY_BIN names a built binary.
func TestConfigMapsValidate(t *testing.T) {
	bin := os.Getenv("TOKENPROXY_BIN")
	if bin == "" {
		t.Skip("TOKENPROXY_BIN not set; .ci/manifests.sh builds tokenproxy and sets it")
	}
	for _, o := range []string{"sidecar", "gateway", "sidecar-intercept", "gateway-intercept", "gateway-oauth"} {
		t.Run(o, func(t *testing.T) {
			_, raw := configOf(t, render(t, o))
			f := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(f, []byte(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "validate", "--skip-credentials", "--config", f).CombinedOutput()
			if err != nil {
				t.Fatalf("tokenproxy validate on the %s ConfigMap: %v\n%s", o, err, out)
			}
		})
	}
}
