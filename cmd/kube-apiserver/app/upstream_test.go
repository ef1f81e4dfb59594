package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copiedFromUpstream are the functions of upstream's
// cmd/kube-apiserver/app/server.go that server.go copies, with the hash of
// the release's code (comments aside) that the copy follows.
var copiedFromUpstream = map[string]string{
	"NewAPIServerCommand": "03bde52b780d84161df1b2f8a86f660e65b4a18d926b33212f9cde26cd2fa77f",
	"Run":                 "437a90ba7d201a126142b9ea87f0c735f75c0b434161543c389bf25bbb186217",
}

// TestCopiesFollowUpstream fails when the release of k8s.io/kubernetes in
// go.mod changes a function server.go copies: carry the change into the
// copy, then put the new hash here.
func TestCopiesFollowUpstream(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "k8s.io/kubernetes").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dir, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	path := filepath.Join(dir, "cmd/kube-apiserver/app/server.go")
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0) // no comments: only code counts
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Recv != nil {
			continue
		}
		want, copied := copiedFromUpstream[fn.Name.Name]
		if !copied {
			continue
		}
		found[fn.Name.Name] = true
		var code bytes.Buffer
		if err := printer.Fprint(&code, fset, fn); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(code.Bytes())
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("upstream's %s changed in k8s.io/kubernetes %s (hash %s): compare %s with its copy in server.go, carry the change over, then update copiedFromUpstream",
				fn.Name.Name, version, got, path)
		}
	}
	for name := range copiedFromUpstream {
		if !found[name] {
			t.Errorf("upstream's %s is gone from %s (k8s.io/kubernetes %s): see what replaced it", name, path, version)
		}
	}
}
