package manifests

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// backends are the stores the gateway overlays bring along (the redis and
// postgres components). Each is a workload fenced by NetworkPolicy: only the
// gateway pods reach it, on its one port, and it reaches nothing.
var backends = []struct {
	overlay, workload string
	port              int
}{
	{"gateway", "tokenproxy-redis", 6379},
	{"gateway-intercept", "tokenproxy-redis", 6379},
	{"gateway-oauth", "tokenproxy-redis", 6379},
	{"gateway-oauth", "tokenproxy-postgres", 5432},
}

func TestBackendsFenced(t *testing.T) {
	for _, b := range backends {
		t.Run(b.overlay+"/"+b.workload, func(t *testing.T) {
			docs := render(t, b.overlay)
			dep := find[*appsv1.Deployment](t, docs, "tokenproxy")
			gateway := labels.Set(dep.Spec.Template.Labels)
			tmpl := workloadPod(t, docs, b.workload)
			pod := labels.Set(tmpl.Labels)
			var c *corev1.Container
			for i := range tmpl.Spec.Containers {
				for _, p := range tmpl.Spec.Containers[i].Ports {
					if int(p.ContainerPort) == b.port {
						c = &tmpl.Spec.Containers[i]
					}
				}
			}
			if c == nil {
				t.Fatalf("no container of %s listens on %d", b.workload, b.port)
			}

			svc := find[*corev1.Service](t, docs, b.workload)
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(pod) {
				t.Errorf("Service %s does not select the %s pods", svc.Name, b.workload)
			}
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
				return int(p.Port) == b.port && resolvePort(c, p.TargetPort) == b.port
			}) {
				t.Errorf("Service %s has no port %d targeting the container's %d", svc.Name, b.port, b.port)
			}

			nps := policiesFor(docs, pod)
			var ingress, egress bool
			for _, np := range nps {
				ingress = ingress || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
				egress = egress || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
				for _, r := range np.Spec.Ingress {
					if len(r.Ports) == 0 {
						t.Errorf("NetworkPolicy %s: ingress rule without ports admits every port", np.Name)
					}
					for _, p := range r.Ports {
						if p.Port == nil || resolvePort(c, *p.Port) != b.port {
							t.Errorf("NetworkPolicy %s admits port %v; only %d is served", np.Name, p.Port, b.port)
						}
					}
					if len(r.From) == 0 {
						t.Errorf("NetworkPolicy %s admits everyone", np.Name)
					}
					for _, peer := range r.From {
						if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil {
							t.Errorf("NetworkPolicy %s admits %+v; only the gateway pods of this namespace are expected", np.Name, peer)
							continue
						}
						s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
						if err != nil || s.Empty() || !s.Matches(gateway) {
							t.Errorf("NetworkPolicy %s admits pods %v, not the gateway's", np.Name, peer.PodSelector.MatchLabels)
							continue
						}
						for _, d := range docs {
							if other, ok := PodOf(d); ok && d.Name() != dep.Namespace+"/"+dep.Name && s.Matches(labels.Set(other.Labels)) {
								t.Errorf("NetworkPolicy %s admits the pods of %s too", np.Name, d.Name())
							}
						}
					}
				}
				if len(np.Spec.Egress) > 0 {
					t.Errorf("NetworkPolicy %s lets %s reach out; a store needs no egress", np.Name, b.workload)
				}
			}
			if !ingress {
				t.Errorf("no NetworkPolicy restricts ingress to the %s pods: every pod in the cluster could reach it", b.workload)
			}
			if !egress {
				t.Errorf("no NetworkPolicy restricts egress from the %s pods", b.workload)
			}
		})
	}
}

// workloadPod returns the pod template of the Deployment or StatefulSet named name.
func workloadPod(t *testing.T, docs []Document, name string) *corev1.PodTemplateSpec {
	t.Helper()
	for _, d := range docs {
		if tmpl, ok := PodOf(d); ok {
			if m, _ := metaOf(d.Object); m != nil && m.GetName() == name {
				return tmpl
			}
		}
	}
	t.Fatalf("no workload named %q", name)
	return nil
}

// TestOneNamespacePerOverlay: what an overlay applies lands in one namespace,
// components included (an object left in the default namespace would run
// outside the NetworkPolicies written for its peers).
func TestOneNamespacePerOverlay(t *testing.T) {
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) {
			seen := map[string][]string{}
			for _, d := range render(t, o) {
				m, err := metaOf(d.Object)
				if err != nil {
					t.Fatal(err)
				}
				if _, cluster := clusterScoped[d.GVK.Kind]; cluster {
					continue
				}
				seen[m.GetNamespace()] = append(seen[m.GetNamespace()], d.GVK.Kind+" "+m.GetName())
			}
			if len(seen) > 1 {
				t.Errorf("objects in more than one namespace: %v", seen)
			}
		})
	}
}

// clusterScoped are the kinds these manifests use that live in no namespace.
var clusterScoped = map[string]struct{}{"ClusterRole": {}, "ClusterRoleBinding": {}, "Namespace": {}}
