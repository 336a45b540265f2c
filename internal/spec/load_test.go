package spec

import (
	"path/filepath"
	"testing"
)

// Every example spec in the repository loads without error.
func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example specs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if s.Recovery.NetworkMapping.Suffix() != "-asr" {
				t.Errorf("suffix default: %q", s.Recovery.NetworkMapping.Suffix())
			}
		})
	}
}
