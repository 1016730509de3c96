package coord

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrSettingsMismatch means a node's safety settings differ from the ones
// recorded for its cluster in the coordinator: the node refuses to start.
var ErrSettingsMismatch = errors.New("coord: settings differ from the cluster's record")

// Settings are the cluster-wide values the safety argument depends on. They
// are recorded once per cluster, beside the cluster name, and every node
// must run with the same LeaseDuration, ClockDrift and MaxRequests:
//
//   - a follower trusts the lease the leader that granted it sent, while a
//     new leader waits out leases of older epochs by its own settings;
//   - request ids are deduplicated within a window of MaxRequests ids per
//     replica, so replicas with different windows apply a late retry
//     differently and diverge.
//
// MaxLease is the longest lease any node of the cluster may still grant: it
// is LeaseDuration except while a change of LeaseDuration is rolled out,
// when nodes started before the change still grant the old lease. A new
// leader waits out MaxLease as well as its own lease.
type Settings struct {
	LeaseDuration time.Duration
	ClockDrift    float64
	MaxRequests   int
	MaxLease      time.Duration
	// Version changes with every write and is what SetSettings compares;
	// 0 means no record.
	Version int64
}

// Validate reports the first field of s that no node could run with.
func (s Settings) Validate() error {
	switch {
	case s.LeaseDuration <= 0:
		return fmt.Errorf("coord: settings: lease %v must be positive", s.LeaseDuration)
	case s.ClockDrift < 0 || s.ClockDrift >= 1:
		return fmt.Errorf("coord: settings: clock drift %v must be in [0, 1)", s.ClockDrift)
	case s.MaxRequests <= 0:
		return fmt.Errorf("coord: settings: max requests %d must be positive", s.MaxRequests)
	case s.MaxLease < s.LeaseDuration:
		return fmt.Errorf("coord: settings: max lease %v is under the lease %v", s.MaxLease, s.LeaseDuration)
	}
	return nil
}

// String shows s as the settings command prints it.
func (s Settings) String() string {
	return fmt.Sprintf("lease=%v clock-drift=%v max-requests=%d max-lease=%v", s.LeaseDuration, s.ClockDrift, s.MaxRequests, s.MaxLease)
}

// settingsRecord is the JSON form of the settings record.
type settingsRecord struct {
	Lease       string  `json:"lease"`
	ClockDrift  float64 `json:"clock_drift"`
	MaxRequests int     `json:"max_requests"`
	MaxLease    string  `json:"max_lease"`
}

// EncodeSettings is the record's form in the coordinator (JSON, durations
// as Go duration strings). It refuses settings that do not validate.
func EncodeSettings(s Settings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(settingsRecord{
		Lease: s.LeaseDuration.String(), ClockDrift: s.ClockDrift,
		MaxRequests: s.MaxRequests, MaxLease: s.MaxLease.String(),
	})
}

// DecodeSettings parses a record written by EncodeSettings and sets its
// Version.
func DecodeSettings(b []byte, version int64) (Settings, error) {
	var rec settingsRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return Settings{}, fmt.Errorf("coord: decode settings %q: %w", b, err)
	}
	lease, err := time.ParseDuration(rec.Lease)
	if err != nil {
		return Settings{}, fmt.Errorf("coord: decode settings %q: lease: %w", b, err)
	}
	maxLease, err := time.ParseDuration(rec.MaxLease)
	if err != nil {
		return Settings{}, fmt.Errorf("coord: decode settings %q: max lease: %w", b, err)
	}
	s := Settings{LeaseDuration: lease, ClockDrift: rec.ClockDrift, MaxRequests: rec.MaxRequests, MaxLease: maxLease, Version: version}
	if err := s.Validate(); err != nil {
		return Settings{}, fmt.Errorf("coord: decode settings %q: %w", b, err)
	}
	return s, nil
}
