package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/memstore"
	"github.com/lockstream/lockstream/keyservice/server"
)

// k8sObject is the part of a Kubernetes manifest the deployment test reads.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		ServiceSelector map[string]string `yaml:"-"`
		Template        struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		MaxUnavailable *int `yaml:"maxUnavailable"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func readManifests(t *testing.T, file string) []k8sObject {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var raw map[string]any
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if raw == nil {
			continue
		}
		b, _ := yaml.Marshal(raw)
		var o k8sObject
		if err := yaml.Unmarshal(b, &o); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if o.Kind == "Service" {
			// A Service's selector is a plain label map.
			spec, _ := raw["spec"].(map[string]any)
			sel, _ := spec["selector"].(map[string]any)
			o.Spec.ServiceSelector = map[string]string{}
			for k, v := range sel {
				o.Spec.ServiceSelector[k] = v.(string)
			}
		}
		out = append(out, o)
	}
	return out
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKeyServiceManifestsMatchTheCLI checks deploy/keyservice against the
// CLI so that they cannot drift: every arg of a key server container is a
// flag of `lockstream keys serve` with a value it accepts; the listen port
// is the container port, the Service's target and the Prometheus scrape
// port; the probe paths and /metrics are served by the server; the master
// key and services files are in mounted Secrets; each group has a
// Deployment, a Service and a PodDisruptionBudget that select its pods and
// a memcached Service at the address it is given; every container requests
// resources; the Dockerfile starts the lockstream binary and exposes the
// port.
func TestKeyServiceManifestsMatchTheCLI(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "keyservice")
	serve := newKeysServeCmd()
	handler := testServerHandler(t)
	objs := readManifests(t, filepath.Join(dir, "keyservice.yaml"))
	objs = append(objs, readManifests(t, filepath.Join(dir, "canary.yaml"))...)

	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	memcachedSvc := map[string]int{} // "name:port"
	for _, s := range byKind["Service"] {
		for _, p := range s.Spec.Ports {
			memcachedSvc[s.Metadata.Name+":"+strconv.Itoa(p.Port)] = p.Port
		}
	}
	groups := map[string]bool{}
	servers := 0
	for _, d := range byKind["Deployment"] {
		tmpl := d.Spec.Template
		if !subset(d.Spec.Selector.MatchLabels, tmpl.Metadata.Labels) {
			t.Errorf("%s: its selector %v does not select its pods %v", d.Metadata.Name, d.Spec.Selector.MatchLabels, tmpl.Metadata.Labels)
		}
		for _, c := range tmpl.Spec.Containers {
			if len(c.Resources.Requests) == 0 || c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
				t.Errorf("%s/%s: no cpu and memory requests", d.Metadata.Name, c.Name)
			}
			if len(c.Args) < 2 || c.Args[0] != "keys" || c.Args[1] != "serve" {
				continue // memcached
			}
			servers++
			group := tmpl.Metadata.Labels["lockstream.io/group"]
			groups[group] = true
			flags := map[string]string{}
			for _, a := range c.Args[2:] {
				name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.HasPrefix(a, "--") || !ok {
					t.Errorf("%s: arg %q: want --flag=value", d.Metadata.Name, a)
					continue
				}
				f := serve.Flags().Lookup(name)
				if f == nil {
					t.Errorf("%s: --%s is not a flag of lockstream keys serve", d.Metadata.Name, name)
					continue
				}
				if err := f.Value.Set(val); err != nil {
					t.Errorf("%s: --%s=%s: %v", d.Metadata.Name, name, val, err)
				}
				flags[name] = val
			}
			for _, req := range []string{"listen", "store", "master-key-file", "services", "memcached"} {
				if flags[req] == "" {
					t.Errorf("%s: no --%s", d.Metadata.Name, req)
				}
			}
			if !strings.HasPrefix(flags["store"], "bigtable://") {
				t.Errorf("%s: --store %s: the groups must share one database (bigtable://)", d.Metadata.Name, flags["store"])
			}
			_, portStr, _ := strings.Cut(flags["listen"], ":")
			port, _ := strconv.Atoi(portStr)
			var portName string
			for _, p := range c.Ports {
				if p.ContainerPort == port {
					portName = p.Name
				}
			}
			if portName == "" {
				t.Errorf("%s: no container port %d (--listen %s)", d.Metadata.Name, port, flags["listen"])
			}
			for what, p := range map[string]*k8sProbe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s: no %s probe", d.Metadata.Name, what)
					continue
				}
				if p.HTTPGet.Port != portName && p.HTTPGet.Port != portStr {
					t.Errorf("%s: %s probe on port %q, the server listens on %s", d.Metadata.Name, what, p.HTTPGet.Port, portName)
				}
				if code := get(handler, p.HTTPGet.Path); code != http.StatusOK {
					t.Errorf("%s: %s probe GET %s answers %d", d.Metadata.Name, what, p.HTTPGet.Path, code)
				}
			}
			if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: readiness on %s, want /healthz", d.Metadata.Name, c.ReadinessProbe.HTTPGet.Path)
			}
			ann := tmpl.Metadata.Annotations
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != portStr || get(handler, ann["prometheus.io/path"]) != http.StatusOK || ann["prometheus.io/path"] != "/metrics" {
				t.Errorf("%s: Prometheus annotations %v do not match port %s and /metrics", d.Metadata.Name, ann, portStr)
			}
			// Secrets: the files the flags name are in mounted Secret volumes.
			secretVols := map[string]bool{}
			for _, v := range tmpl.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName != "" {
					secretVols[v.Name] = true
				}
			}
			for _, fl := range []string{"master-key-file", "services"} {
				ok := false
				for _, m := range c.VolumeMounts {
					if secretVols[m.Name] && path.Dir(flags[fl]) == path.Clean(m.MountPath) {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s: --%s %s is not in a mounted Secret", d.Metadata.Name, fl, flags[fl])
				}
			}
			// The group's own memcached, at the address it is given.
			if _, ok := memcachedSvc[flags["memcached"]]; !ok || !strings.HasSuffix(strings.Split(flags["memcached"], ":")[0], "-"+group) {
				t.Errorf("%s: --memcached %s is not the memcached Service of group %s", d.Metadata.Name, flags["memcached"], group)
			}
			// A Service and a PDB of the group select these pods.
			var svcOK, pdbOK bool
			for _, s := range byKind["Service"] {
				if subset(s.Spec.ServiceSelector, tmpl.Metadata.Labels) {
					for _, p := range s.Spec.Ports {
						svcOK = svcOK || p.TargetPort == portName || p.TargetPort == portStr
					}
				}
			}
			for _, p := range byKind["PodDisruptionBudget"] {
				pdbOK = pdbOK || subset(p.Spec.Selector.MatchLabels, tmpl.Metadata.Labels)
			}
			if !svcOK || !pdbOK {
				t.Errorf("%s: pods selected by a Service targeting port %s: %v, by a PodDisruptionBudget: %v", d.Metadata.Name, portName, svcOK, pdbOK)
			}
		}
	}
	if servers < 3 || !maps.Equal(groups, map[string]bool{"a": true, "b": true}) {
		t.Errorf("%d key server Deployments in groups %v, want groups a and b (and a canary)", servers, slices.Collect(maps.Keys(groups)))
	}

	docker, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^ENTRYPOINT \["/lockstream"\]$`),
		regexp.MustCompile(`(?m)^EXPOSE 7400$`),
		regexp.MustCompile(`-X main\.buildVersion=\$\{VERSION\}`),
		regexp.MustCompile(`go build .* \./cmd/lockstream`),
	} {
		if !want.Match(docker) {
			t.Errorf("Dockerfile does not match %s", want)
		}
	}
	if buildVersion != "" || !strings.Contains(string(docker), "main.buildVersion") {
		t.Error("the Dockerfile's -X flag must name the variable keys serve reports")
	}
}

// testServerHandler is a key server's HTTP handler (memory store).
func testServerHandler(t *testing.T) http.Handler {
	t.Helper()
	svc, err := keyservice.New(memstore.New(), keyservice.Options{MasterKey: testMasterKey()})
	if err != nil {
		t.Fatal(err)
	}
	services, err := server.NewServices([]server.ServiceConfig{{Name: "x", Secret: "deploy-test-secret-000001", Scopes: []string{"x"}, Categories: []string{"*"}, Mode: server.ModeEncrypt}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Config{Service: svc, Services: services, Audit: io.Discard, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), BuildVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler()
}

func get(h http.Handler, p string) int {
	if p == "" {
		return 0
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
	return rec.Code
}

func testMasterKey() fieldcrypt.Secret { return fieldcrypt.NewSecret(bytes.Repeat([]byte{5}, 32)) }
