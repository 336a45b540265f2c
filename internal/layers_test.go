// Package internal_test holds the test that keeps the layers of
// docs/architecture.md: each package may import only the internal packages
// its row allows.
package internal_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/standby-dr/standby/internal/"

// allowed is the layer table of docs/architecture.md. A package missing
// here fails the test: a new package declares its layer first.
var allowed = map[string][]string{
	"clock":                 {},
	"spec":                  {"clock"},
	"netplan":               {"spec", "clock"},
	"capture":               {"clock"},
	"replica":               {"clock"},
	"ship":                  {"clock", "capture", "replica"},
	"replication":           {"clock", "capture", "replica", "ship", "spec"},
	"workload":              {"clock"},
	"provider":              {"clock", "spec", "netplan"},
	"provider/local":        {"clock", "spec", "netplan", "provider", "provider/procgroup"},
	"provider/netlab":       {"clock", "spec", "netplan", "provider", "provider/procgroup"},
	"provider/azure":        {"clock", "spec", "netplan", "provider"},
	"provider/providertest": {"clock", "spec", "netplan", "provider"},
	"provider/procgroup":    {},
	"state":                 {"clock"},
	"api":                   {},
	"recovery":              {"clock", "spec", "netplan", "api", "provider"},
	"server":                {"clock", "spec", "netplan", "api", "recovery"},
	"daemon":                {"clock", "spec", "netplan", "capture", "replica", "ship", "replication", "workload", "provider", "provider/local", "provider/netlab", "state", "api", "recovery", "server"},
	"cli":                   nil, // the one place that wires everything
}

func TestLayers(t *testing.T) {
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		if pkg == "." {
			return nil
		}
		allow, known := allowed[pkg]
		if !known {
			t.Errorf("package internal/%s has no row in the layer table (internal/layers_test.go and docs/architecture.md)", pkg)
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		if pkg == "cli" {
			return nil
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(p, module) {
				continue
			}
			dep := strings.TrimPrefix(p, module)
			if !slices.Contains(allow, dep) && !strings.HasPrefix(dep, pkg+"/") {
				t.Errorf("%s imports internal/%s, which its layer does not allow (allowed: %v)", path, dep, allow)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no package checked")
	}
	// Every package has a doc.go that says what it owns.
	for pkg := range allowed {
		if _, err := os.Stat(pkg); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(pkg, "doc.go")); err != nil {
			t.Errorf("internal/%s has no doc.go", pkg)
		}
	}
}
