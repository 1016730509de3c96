package deploy

import (
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of compose.yaml the production-shape check reads.
type composeFile struct {
	Services map[string]struct {
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Restart     string            `yaml:"restart"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// TestComposeIsProductionShaped checks, without Docker, that the compose
// file runs the cluster the way docs/operations.md recommends (FINDINGS:
// it ran nodes without --data-dir, coordinators with their data inside the
// container, restart "no" and no healthchecks, so a `down` or a recreated
// container lost every node's data at once): every node has a data
// directory on a named volume of its own, every coordinator its data
// directory on one, each service restarts unless stopped and has a
// healthcheck run by the image's own binary. TestComposeClusterUnderFaults
// recreates the containers and checks that no acknowledged write is lost.
func TestComposeIsProductionShaped(t *testing.T) {
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	used := map[string]string{}
	var nodes, coords int
	for name, s := range f.Services {
		dir := ""
		switch {
		case slices.Contains(s.Command, "node"):
			nodes++
			dir = s.Environment["KVSTORE_DATA_DIR"]
			if dir == "" {
				t.Errorf("node %s: no KVSTORE_DATA_DIR (--data-dir): its data lives only in memory", name)
			}
			if s.Environment["KVSTORE_NO_FSYNC"] != "" {
				t.Errorf("node %s: fsync turned off", name)
			}
		case slices.Contains(s.Command, "coordinator"):
			coords++
			for _, arg := range s.Command {
				if d, ok := strings.CutPrefix(arg, "--data-dir="); ok {
					dir = d
				}
			}
			if dir == "" {
				t.Errorf("coordinator %s: no --data-dir", name)
			}
		default:
			t.Errorf("service %s: neither a node nor a coordinator (command %v)", name, s.Command)
			continue
		}
		mounted := false
		for _, v := range s.Volumes {
			src, target, _ := strings.Cut(v, ":")
			target, _, _ = strings.Cut(target, ":")
			if dir == "" || target != dir {
				continue
			}
			mounted = true
			if _, named := f.Volumes[src]; !named {
				t.Errorf("service %s: %s is mounted from %q, not a named volume of the file", name, dir, src)
			}
			if other, ok := used[src]; ok {
				t.Errorf("services %s and %s share volume %s", other, name, src)
			}
			used[src] = name
		}
		if dir != "" && !mounted {
			t.Errorf("service %s: data directory %s is not on a volume: recreating the container loses it", name, dir)
		}
		if s.Restart != "unless-stopped" && s.Restart != "always" {
			t.Errorf("service %s: restart %q, want unless-stopped", name, s.Restart)
		}
		if len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[0] != "CMD" || s.Healthcheck.Test[1] != "/kvstore" || s.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("service %s: healthcheck %v, want [CMD /kvstore healthcheck <url>]", name, s.Healthcheck.Test)
		}
	}
	if nodes != 5 || coords != 3 {
		t.Errorf("%d nodes and %d coordinators, want 5 and 3", nodes, coords)
	}
}
