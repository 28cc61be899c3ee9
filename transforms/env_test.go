package transforms

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestOnlyTheRegistryIsMutable: the package's only package-level variable
// holding mutable state is env, the registry of worker environments; the
// others are sentinel errors (errors.New). State anywhere else would be
// shared by every run of the process whatever its configuration.
func TestOnlyTheRegistryIsMutable(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	sawEnv := false
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.VAR {
					continue
				}
				for _, spec := range g.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, name := range vs.Names {
						switch {
						case name.Name == "env":
							sawEnv = true
						case name.Name == "_":
						case strings.HasPrefix(strings.ToLower(name.Name), "err") && i < len(vs.Values) && isErrorsNew(vs.Values[i]):
						default:
							t.Errorf("%s: package-level var %s: mutable state belongs in env (the registry of worker environments)", fset.Position(name.Pos()), name.Name)
						}
					}
				}
			}
		}
	}
	if !sawEnv {
		t.Error("no registry env found: the test no longer looks at the right package")
	}
}

func isErrorsNew(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "errors" && sel.Sel.Name == "New"
}
