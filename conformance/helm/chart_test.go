// Package helm renders the Helm chart (deploy/helm/poolwatch) with the real
// helm and decodes every object it renders strictly into its real Go type,
// from k8s.io/api and prometheus-operator's monitoring/v1, so that a
// misspelled or misplaced field fails; then checks what the objects say: the
// PrometheusRule holds the shipped rule files' groups, the dashboards are the shipped
// dashboards, and the configuration the agent gets passes its own
// check-config.
//
// helm is a dependency like the servers (internal/launch's table): a
// missing helm fails, unless POOLWATCH_TEST_SKIP names it (never in CI);
// `make deps` installs it.
package helm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8sjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/poolwatch/poolwatch/internal/testenv"
	"github.com/poolwatch/poolwatch/mixin"
)

var (
	repoRoot = filepath.Join("..", "..")
	chartDir = filepath.Join(repoRoot, "deploy", "helm", "poolwatch")
)

// everything turns every optional object of the chart on.
var everything = []string{
	"serviceMonitor.enabled=true",
	"podMonitor.enabled=true",
	"prometheusRule.enabled=true",
	"dashboards.enabled=true",
	"secrets.values.example-db=S3cret-example",
}

func helmBin(t *testing.T) string {
	t.Helper()
	testenv.Require(t, "helm")
	bin, err := testenv.LookPath("helm")
	require.NoError(t, err)
	return bin
}

// helmTemplate renders the chart at dir with --set values.
func helmTemplate(t *testing.T, dir string, set ...string) []byte {
	t.Helper()
	args := []string{"template", "pw", dir, "--namespace", "monitoring"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helmBin(t), args...) //nolint:gosec // helm from LookPath, arguments of the test
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "helm template: %s", stderr.String())
	return out
}

// object is one rendered object, decoded strictly into its Go type.
type object struct {
	kind, name string
	value      any
}

// newObject returns a pointer to the Go type of apiVersion/kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "monitoring.coreos.com/v1/PodMonitor":
		return &monitoringv1.PodMonitor{}, nil
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, nil
	}
	return nil, fmt.Errorf("no Go type for %s %s: add it to the test", apiVersion, kind)
}

// decodeAll splits a helm template output into its objects and decodes
// each strictly (unknown or duplicate fields fail).
func decodeAll(out []byte) ([]object, error) {
	var objs []object
	for i, doc := range strings.Split(string(out), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if head.Kind == "" {
			continue // only comments
		}
		v, err := newObject(head.APIVersion, head.Kind)
		if err != nil {
			return nil, err
		}
		// As the API server decodes: case-sensitive field names (encoding/json
		// alone would take "containerport" for containerPort), no unknown
		// or duplicate field.
		js, err := sigsyaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
		}
		strictErrs, err := k8sjson.UnmarshalStrict(js, v)
		if err == nil {
			err = errors.Join(strictErrs...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
		}
		objs = append(objs, object{kind: head.Kind, name: head.Metadata.Name, value: v})
	}
	return objs, nil
}

func find[T any](t *testing.T, objs []object, kind string) []T {
	t.Helper()
	var out []T
	for _, o := range objs {
		if o.kind == kind {
			out = append(out, *o.value.(*T))
		}
	}
	return out
}

func TestChart_RendersObjectsThatDecodeStrictlyIntoTheirAPITypes(t *testing.T) {
	objs, err := decodeAll(helmTemplate(t, chartDir, everything...))
	require.NoError(t, err)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.kind)
	}
	sort.Strings(kinds)
	require.Equal(t, []string{"ConfigMap", "ConfigMap", "ConfigMap", "ConfigMap", "Deployment", "PodMonitor",
		"PrometheusRule", "Secret", "Service", "ServiceAccount", "ServiceMonitor"}, kinds)

	// The defaults render the agent only: no CRD is needed.
	objs, err = decodeAll(helmTemplate(t, chartDir))
	require.NoError(t, err)
	kinds = nil
	for _, o := range objs {
		kinds = append(kinds, o.kind)
	}
	sort.Strings(kinds)
	require.Equal(t, []string{"ConfigMap", "Deployment", "Service", "ServiceAccount"}, kinds)
}

// A field misspelled in a template fails the test: the strict decoding is
// what catches it, since helm and YAML accept any key.
func TestChart_AMisspelledFieldInATemplateFails(t *testing.T) {
	for _, tc := range []struct{ file, from, to string }{
		{"deployment.yaml", "readinessProbe:", "readynessProbe:"},
		{"deployment.yaml", "containerPort:", "containerport:"},
		{"service.yaml", "targetPort:", "targetport:"},
		{"servicemonitor.yaml", "scrapeTimeout:", "scrape_timeout:"},
		{"podmonitor.yaml", "podMetricsEndpoints:", "podMetricEndpoints:"},
		{"dashboards.yaml", "annotations:", "anotations:"},
	} {
		t.Run(tc.file+"/"+tc.to, func(t *testing.T) {
			dir := copyChart(t)
			path := filepath.Join(dir, "templates", tc.file)
			b, err := os.ReadFile(path) //nolint:gosec // the test's copy
			require.NoError(t, err)
			require.Contains(t, string(b), tc.from)
			require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(b), tc.from, tc.to, 1)), 0o600))
			_, err = decodeAll(helmTemplate(t, dir, everything...))
			require.Error(t, err)
			require.Contains(t, err.Error(), `unknown field "`)
			require.Contains(t, err.Error(), strings.TrimSuffix(tc.to, ":")+`"`)
		})
	}
	// And a rule group field in the rule file the PrometheusRule carries.
	dir := copyChart(t)
	rules := filepath.Join(dir, "files", "rules", "poolwatch.rules.yml")
	b, err := os.ReadFile(rules) //nolint:gosec // the test's copy
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(rules, bytes.Replace(b, []byte("    rules:"), []byte("    rulez:"), 1), 0o600))
	_, err = decodeAll(helmTemplate(t, dir, everything...))
	require.ErrorContains(t, err, `unknown field "spec.groups[`)
	require.ErrorContains(t, err, `].rulez"`)
}

// copyChart copies the chart into a temp dir.
func copyChart(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "poolwatch")
	require.NoError(t, os.CopyFS(dst, os.DirFS(chartDir)))
	return dst
}

// plain is a decoded value in encoding/json's form, for comparisons.
func plain(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

func TestChart_PrometheusRuleIsTheShippedRuleFile(t *testing.T) {
	objs, err := decodeAll(helmTemplate(t, chartDir, everything...))
	require.NoError(t, err)
	rules := find[monitoringv1.PrometheusRule](t, objs, "PrometheusRule")
	require.Len(t, rules, 1)
	// Every shipped rule file (alerts/*.rules.yml), in path order.
	files, err := filepath.Glob(filepath.Join(repoRoot, "alerts", "*.rules.yml"))
	require.NoError(t, err)
	require.Contains(t, files, filepath.Join(repoRoot, filepath.FromSlash(mixin.RulesFile)))
	var groups []any
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // a file of the repository
		require.NoError(t, err)
		var shipped struct {
			Groups []any `yaml:"groups"`
		}
		require.NoError(t, yaml.Unmarshal(b, &shipped))
		require.NotEmpty(t, shipped.Groups, f)
		groups = append(groups, shipped.Groups...)
	}
	require.Equal(t, plain(t, groups), plain(t, rules[0].Spec.Groups))
}

func TestChart_DashboardConfigMapsHoldTheShippedDashboardsForTheSidecar(t *testing.T) {
	objs, err := decodeAll(helmTemplate(t, chartDir, append(everything, "dashboards.folder=Databases")...))
	require.NoError(t, err)
	found := map[string]bool{}
	for _, cm := range find[corev1.ConfigMap](t, objs, "ConfigMap") {
		if cm.Labels["grafana_dashboard"] != "1" {
			continue
		}
		require.Equal(t, "Databases", cm.Annotations["grafana_folder"])
		require.Len(t, cm.Data, 1)
		for file, content := range cm.Data {
			want, err := os.ReadFile(filepath.Join(repoRoot, "dashboards", file)) //nolint:gosec // a file of the repository
			require.NoError(t, err, "ConfigMap %s holds %s, which is not a shipped dashboard", cm.Name, file)
			require.Equal(t, strings.TrimRight(string(want), "\n"), content, file)
			found[file] = true
		}
	}
	require.Len(t, found, 3)
}

// The agent's pod: the configuration it mounts passes its own check-config
// (with the password files the Secret mounts), its probes and port are the
// agent's, and it runs unprivileged.
func TestChart_TheDeploymentRunsTheAgentWithTheConfigMapAndSecret(t *testing.T) {
	objs, err := decodeAll(helmTemplate(t, chartDir, append(everything, "web.enableLifecycle=true", "metricsTargets=false")...))
	require.NoError(t, err)
	deps := find[appsv1.Deployment](t, objs, "Deployment")
	require.Len(t, deps, 1)
	pod := deps[0].Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	require.Equal(t, []string{"--config.file=/etc/poolwatch/poolwatch.yml", "--web.listen-address=:9648", "--web.shutdown-timeout=10s",
		"--log.level=info", "--log.format=logfmt", "--no-metrics.targets", "--web.enable-lifecycle"}, c.Args)
	require.Equal(t, "/-/healthy", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, "/-/ready", c.ReadinessProbe.HTTPGet.Path)
	require.Equal(t, int32(9648), c.Ports[0].ContainerPort)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.True(t, *pod.SecurityContext.RunAsNonRoot)
	require.Greater(t, *pod.TerminationGracePeriodSeconds, int64(10), "longer than --web.shutdown-timeout")

	// Mount what the pod mounts into a directory laid out as in the pod,
	// and run the agent's own check-config on it.
	root := t.TempDir()
	byName := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		byName[v.Name] = v
	}
	var cfgPath string
	for _, m := range c.VolumeMounts {
		v := byName[m.Name]
		switch {
		case v.ConfigMap != nil:
			cms := find[corev1.ConfigMap](t, objs, "ConfigMap")
			i := slices.IndexFunc(cms, func(cm corev1.ConfigMap) bool { return cm.Name == v.ConfigMap.Name })
			require.GreaterOrEqual(t, i, 0, "the ConfigMap %s is rendered", v.ConfigMap.Name)
			cfgPath = filepath.Join(root, m.MountPath)
			writeFile(t, cfgPath, cms[i].Data[m.SubPath])
		case v.Secret != nil:
			secrets := find[corev1.Secret](t, objs, "Secret")
			i := slices.IndexFunc(secrets, func(s corev1.Secret) bool { return s.Name == v.Secret.SecretName })
			require.GreaterOrEqual(t, i, 0, "the Secret %s is rendered", v.Secret.SecretName)
			for k, val := range secrets[i].StringData {
				writeFile(t, filepath.Join(root, m.MountPath, k), val)
			}
		}
	}
	require.NotEmpty(t, cfgPath)
	cfg, err := os.ReadFile(cfgPath) //nolint:gosec // the test's temp dir
	require.NoError(t, err)
	// The pod's absolute paths, moved under root.
	writeFile(t, cfgPath, strings.ReplaceAll(string(cfg), "/etc/poolwatch/", filepath.Join(root, "etc", "poolwatch")+"/"))
	out, err := exec.Command(testenv.BuildPoolwatch(t), "check-config", "--config.file="+cfgPath).CombinedOutput() //nolint:gosec // the binary built for the test
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "OK, 1 targets")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o750))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}

func TestChart_HelmLintIsClean(t *testing.T) {
	out, err := exec.Command(helmBin(t), "lint", "--strict", chartDir).CombinedOutput() //nolint:gosec // helm from LookPath
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "1 chart(s) linted, 0 chart(s) failed")
	require.NotContains(t, string(out), "[WARNING]")
	require.NotContains(t, string(out), "[ERROR]")
}
