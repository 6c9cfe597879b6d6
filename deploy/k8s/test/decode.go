// Package manifests checks tokenproxy's Kubernetes manifests: every document
// decodes strictly into the real API types, every kustomization renders, and
// the rendered workloads keep the security posture the docs promise.
//
// It is a module of its own so that k8s.io/api stays out of the product's
// go.mod.
package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// scheme holds the API groups and versions the manifests may use. A kind or
// version outside it (a deprecated policy/v1beta1, a typo) is an error.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		appsv1.AddToScheme,
		policyv1.AddToScheme,
		networkingv1.AddToScheme,
		rbacv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// Document is one decoded manifest.
type Document struct {
	Source string // file, or overlay, and document index
	GVK    schema.GroupVersionKind
	Object runtime.Object
}

// Name returns the object's namespace/name.
func (d Document) Name() string {
	m, err := metaOf(d.Object)
	if err != nil {
		return "?"
	}
	if m.GetNamespace() == "" {
		return m.GetName()
	}
	return m.GetNamespace() + "/" + m.GetName()
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", o)
	}
	return m, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// SplitDocuments splits a YAML stream into its non-empty documents.
func SplitDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		if len(bytes.TrimSpace(stripComments([]byte(d)))) == 0 {
			continue
		}
		docs = append(docs, []byte(d))
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// DecodeStrict decodes one YAML document into its Kubernetes API type the way
// the API server's strict field validation does: unknown fields, fields
// spelled with the wrong case (which encoding/json would accept) and
// duplicate keys are errors, and so is a kind or version not in the scheme.
func DecodeStrict(doc []byte) (schema.GroupVersionKind, runtime.Object, error) {
	// YAMLToJSONStrict rejects duplicate keys in the YAML itself.
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return schema.GroupVersionKind{}, nil, fmt.Errorf("yaml: %w", err)
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return schema.GroupVersionKind{}, nil, fmt.Errorf("reading apiVersion and kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return schema.GroupVersionKind{}, nil, errors.New("document has no apiVersion or kind")
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return schema.GroupVersionKind{}, nil, fmt.Errorf("apiVersion %q: %w", tm.APIVersion, err)
	}
	gvk := gv.WithKind(tm.Kind)
	obj, err := scheme.New(gvk)
	if err != nil {
		return gvk, nil, fmt.Errorf("%s is not a kind these manifests may use (add its group to the test's scheme if it is meant): %w", gvk, err)
	}
	strictErrs, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return gvk, nil, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	if len(strictErrs) > 0 {
		return gvk, nil, fmt.Errorf("%s: %w", gvk.Kind, errors.Join(strictErrs...))
	}
	return gvk, obj, nil
}

// DecodeAll decodes every document of a YAML stream strictly. source names
// the stream in errors.
func DecodeAll(source string, data []byte) ([]Document, error) {
	var out []Document
	var errs []error
	for i, d := range SplitDocuments(data) {
		src := fmt.Sprintf("%s[%d]", source, i)
		gvk, obj, err := DecodeStrict(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		out = append(out, Document{Source: src, GVK: gvk, Object: obj})
	}
	return out, errors.Join(errs...)
}
