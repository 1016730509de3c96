package node

import (
	"strings"
	"testing"
	"time"
)

// TestConfigFaultsFollowTheBuild checks the nofaults build tag: an ordinary
// build accepts Config.Faults, a build with -tags nofaults refuses them and
// reads no slow disk (go test -tags nofaults -run TestConfigFaults ./node/).
func TestConfigFaultsFollowTheBuild(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID, cfg.Coordinator = "n1", noCoord{}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate without faults = %v, want nil", err)
	}
	for name, f := range map[string]Faults{
		"SkipInvalidation": {SkipInvalidation: true},
		"SlowDisk":         {SlowDisk: time.Millisecond},
	} {
		c := cfg
		c.Faults = f
		err := c.Validate()
		switch {
		case faultsOn && err != nil:
			t.Errorf("%s: Validate = %v, want nil (faults built in)", name, err)
		case !faultsOn && (err == nil || !strings.Contains(err.Error(), "nofaults")):
			t.Errorf("%s: Validate = %v, want an error naming nofaults", name, err)
		}
	}
	c := cfg
	c.Faults.SlowDisk = time.Second
	if want := map[bool]time.Duration{true: time.Second, false: 0}[faultsOn]; c.slowDisk() != want {
		t.Errorf("slowDisk = %v, want %v (faultsOn %v)", c.slowDisk(), want, faultsOn)
	}
}
