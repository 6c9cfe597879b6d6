package manifests

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The tokenproxy container's contract with the manifests.
const (
	ProxyContainer = "tokenproxy"
	NonrootUID     = 65532
	AdminPortName  = "admin"
	ConfigMapName  = "tokenproxy-config"
	ConfigKey      = "config.yaml"
)

// Config is the part of tokenproxy's configuration the manifests depend on.
// The product's own decoder is strict; this one only reads what it needs.
type Config struct {
	Listen struct {
		Proxy string `json:"proxy"`
		Admin string `json:"admin"`
	} `json:"listen"`
	ShutdownGrace string `json:"shutdown_grace"`
	Interception  struct {
		CA struct {
			Generate *struct {
				WriteCertTo string `json:"write_cert_to"`
			} `json:"generate"`
		} `json:"ca"`
	} `json:"interception"`
}

// caDir is the directory a generated interception CA's certificate is
// written to, "" when the CA is not generated.
func (c Config) caDir() string {
	if g := c.Interception.CA.Generate; g != nil && g.WriteCertTo != "" {
		return path.Dir(g.WriteCertTo)
	}
	return ""
}

// ParseConfig reads the listeners and the drain period from a configuration.
func ParseConfig(data string) (Config, error) {
	var c Config
	if err := yaml.Unmarshal([]byte(data), &c); err != nil {
		return c, err
	}
	return c, nil
}

// Grace returns shutdown_grace, 20s when unset (the product's default).
func (c Config) Grace() (time.Duration, error) {
	if c.ShutdownGrace == "" {
		return 20 * time.Second, nil
	}
	return time.ParseDuration(c.ShutdownGrace)
}

func port(hostport string) (int, error) {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// Problems collects findings with a common prefix.
type Problems []string

func (p *Problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// CheckPod checks the security posture every workload in these manifests
// keeps: non-root, read-only root filesystem, no privilege escalation, all
// capabilities dropped, RuntimeDefault seccomp, resource requests and a
// memory limit, no ServiceAccount token unless asked for, nothing shared with
// the host.
func CheckPod(name string, spec *corev1.PodSpec) Problems {
	var p Problems
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p.add("%s: automountServiceAccountToken must be false (mount an audience-bound projected token where one is needed)", name)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		p.add("%s: must not share the host's network, PID or IPC namespace", name)
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		p.add("%s: shareProcessNamespace would let other containers read tokenproxy's credentials", name)
	}
	podSeccomp := psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	for _, c := range allContainers(spec) {
		cn := name + "/" + c.Name
		sc := c.SecurityContext
		if sc == nil {
			p.add("%s: no securityContext", cn)
			sc = &corev1.SecurityContext{}
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = psc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			p.add("%s: runAsNonRoot must be true", cn)
		}
		uid := sc.RunAsUser
		if uid == nil {
			uid = psc.RunAsUser
		}
		if uid == nil || *uid == 0 {
			p.add("%s: runAsUser must be a non-zero number (an image's USER name cannot be verified by runAsNonRoot)", cn)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			p.add("%s: readOnlyRootFilesystem must be true", cn)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			p.add("%s: allowPrivilegeEscalation must be false", cn)
		}
		if sc.Privileged != nil && *sc.Privileged {
			p.add("%s: must not be privileged", cn)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			p.add("%s: capabilities must drop ALL", cn)
		} else if len(sc.Capabilities.Add) > 0 {
			p.add("%s: adds capabilities %v", cn, sc.Capabilities.Add)
		}
		seccomp := podSeccomp
		if sc.SeccompProfile != nil {
			seccomp = sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
		}
		if !seccomp {
			p.add("%s: seccompProfile must be RuntimeDefault", cn)
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			p.add("%s: no CPU request", cn)
		}
		if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
			p.add("%s: no memory request", cn)
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			p.add("%s: no memory limit", cn)
		}
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") {
			p.add("%s: image %q must name a version", cn, c.Image)
		}
	}
	return p
}

func allContainers(spec *corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

// FindProxy returns the tokenproxy container and whether it is a native
// sidecar (an init container).
func FindProxy(spec *corev1.PodSpec) (c *corev1.Container, sidecar bool) {
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == ProxyContainer {
			return &spec.InitContainers[i], true
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == ProxyContainer {
			return &spec.Containers[i], false
		}
	}
	return nil, false
}

// CheckProxy checks the tokenproxy container of a pod against its
// configuration: uid 65532, probes on the admin listener's port, whole-directory
// read-only mounts, native-sidecar shape, a drain that fits the grace period,
// and credential volumes mounted into tokenproxy alone.
func CheckProxy(name string, spec *corev1.PodSpec, cfg Config) Problems {
	var p Problems
	c, sidecar := FindProxy(spec)
	if c == nil {
		p.add("%s: no container named %q", name, ProxyContainer)
		return p
	}
	cn := name + "/" + c.Name
	if c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser != NonrootUID {
		p.add("%s: runAsUser must be %d, the image's user", cn, NonrootUID)
	}
	adminPort, err := port(cfg.Listen.Admin)
	if err != nil {
		p.add("%s: listen.admin %q: %v", cn, cfg.Listen.Admin, err)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen.Admin); host == "127.0.0.1" || host == "localhost" || host == "::1" {
		p.add("%s: listen.admin %q is loopback: the kubelet's probes come to the pod IP", cn, cfg.Listen.Admin)
	}
	declared := -1
	for _, cp := range c.Ports {
		if cp.Name == AdminPortName {
			declared = int(cp.ContainerPort)
		}
	}
	if declared != adminPort {
		p.add("%s: containerPort %q is %d, listen.admin is %q", cn, AdminPortName, declared, cfg.Listen.Admin)
	}
	probe := func(kind string, pr *corev1.Probe, path string) {
		if pr == nil {
			p.add("%s: no %s probe", cn, kind)
			return
		}
		if pr.HTTPGet == nil {
			p.add("%s: %s probe must be an httpGet (the image has no shell)", cn, kind)
			return
		}
		if pr.HTTPGet.Path != path {
			p.add("%s: %s probe path %q, want %q", cn, kind, pr.HTTPGet.Path, path)
		}
		if got := resolvePort(c, pr.HTTPGet.Port); got != adminPort {
			p.add("%s: %s probe port %s resolves to %d, want the admin port %d", cn, kind, pr.HTTPGet.Port.String(), got, adminPort)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")
	for _, m := range c.VolumeMounts {
		// The one writable mount allowed: the emptyDir a generated
		// interception CA's certificate (never its key) is written to.
		caMount := m.MountPath == cfg.caDir() && isEmptyDir(spec, m.Name)
		if !m.ReadOnly && !caMount {
			p.add("%s: volume %q must be mounted read-only", cn, m.Name)
		}
		if caMount {
			for _, other := range allContainers(spec) {
				for _, om := range other.VolumeMounts {
					if other.Name != ProxyContainer && om.Name == m.Name && !om.ReadOnly {
						p.add("%s/%s: the interception CA volume %q must be mounted read-only in the application", name, other.Name, m.Name)
					}
				}
			}
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			p.add("%s: volume %q uses subPath, so a rotated Secret or edited ConfigMap never reaches the proxy", cn, m.Name)
		}
	}
	if sidecar {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			p.add("%s: an init container must have restartPolicy Always to be a sidecar", cn)
		}
		if c.StartupProbe == nil {
			p.add("%s: a sidecar needs a startupProbe so that the application starts after the proxy listens", cn)
		}
	}
	grace, err := cfg.Grace()
	if err != nil {
		p.add("%s: shutdown_grace %q: %v", cn, cfg.ShutdownGrace, err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		h := c.Lifecycle.PreStop
		if h.Exec != nil {
			p.add("%s: preStop exec needs a shell the image does not have; use sleep", cn)
		}
		if h.Sleep != nil {
			preStop = time.Duration(h.Sleep.Seconds) * time.Second
		}
	}
	if !sidecar && preStop == 0 {
		p.add("%s: a Service-backed tokenproxy needs a preStop sleep so that endpoint removal propagates before SIGTERM", cn)
	}
	tgp := 30 * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		tgp = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if preStop+grace >= tgp {
		p.add("%s: preStop %v + shutdown_grace %v leaves no room in terminationGracePeriodSeconds %v", cn, preStop, grace, tgp)
	}
	// Credential volumes (Secrets, projected tokens) belong to tokenproxy only.
	for _, v := range spec.Volumes {
		var mode *int32
		switch {
		case v.Secret != nil:
			mode = v.Secret.DefaultMode
		case v.Projected != nil:
			mode = v.Projected.DefaultMode
		default:
			continue
		}
		if mode == nil || *mode&0o037 != 0 {
			p.add("%s: credential volume %q: defaultMode must be set and give the group at most read and others nothing (0440)", name, v.Name)
		}
		for _, other := range allContainers(spec) {
			if other.Name == ProxyContainer {
				continue
			}
			for _, m := range other.VolumeMounts {
				if m.Name == v.Name {
					p.add("%s/%s: mounts credential volume %q, which only tokenproxy may read", name, other.Name, v.Name)
				}
			}
		}
	}
	return p
}

func isEmptyDir(spec *corev1.PodSpec, volume string) bool {
	for _, v := range spec.Volumes {
		if v.Name == volume {
			return v.EmptyDir != nil
		}
	}
	return false
}

func resolvePort(c *corev1.Container, port intstr.IntOrString) int {
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

// PodOf returns the pod template of a workload document.
func PodOf(d Document) (*corev1.PodTemplateSpec, bool) {
	switch o := d.Object.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template, true
	case *appsv1.StatefulSet:
		return &o.Spec.Template, true
	case *appsv1.DaemonSet:
		return &o.Spec.Template, true
	}
	return nil, false
}

func ptr[T any](v T) *T { return &v }

func intstrFromName(name string) intstr.IntOrString { return intstr.FromString(name) }
