package coord

import (
	"encoding/json"
	"fmt"
)

// votersRecord is the JSON form of the voter record in both backends:
// {"ids":[...]}, with "unsealed":true while no leader has sealed it
// (Voters.Unsealed). Records written before the mark existed have no
// "unsealed" field and read as sealed.
type votersRecord struct {
	IDs      []string `json:"ids"`
	Unsealed bool     `json:"unsealed,omitempty"`
}

// EncodeVoters is the voter record's form in the coordinator: JSON, the ids
// in the given order, and the unsealed mark only if set. Only a backend's
// CreateVoters writes a record unsealed; every other write seals it.
func EncodeVoters(ids []string, unsealed bool) ([]byte, error) {
	if ids == nil {
		ids = []string{}
	}
	b, err := json.Marshal(votersRecord{IDs: ids, Unsealed: unsealed})
	if err != nil {
		return nil, fmt.Errorf("coord: encode voters: %w", err)
	}
	return b, nil
}

// DecodeVoters parses a record written by EncodeVoters (or by a build
// before the unsealed mark, which reads as sealed) and sets its Version.
func DecodeVoters(b []byte, version int64) (Voters, error) {
	var rec votersRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return Voters{}, fmt.Errorf("coord: decode voters %q: %w", b, err)
	}
	return Voters{IDs: rec.IDs, Version: version, Unsealed: rec.Unsealed}, nil
}
