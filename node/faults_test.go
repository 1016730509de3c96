package node

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
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

// TestEveryFaultCheckIsGuarded reads the package's source: every read of a
// Config.Faults field must be the right operand of `faultsOn && ...` (or
// sit in a function that returns early unless faultsOn, as slowDisk), so
// that a build with -tags nofaults drops it. A new fault switch read
// without the guard fails here.
func TestEveryFaultCheckIsGuarded(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			guardedFunc := returnsUnlessFaultsOn(fn.Body)
			var stack []ast.Node
			ast.Inspect(fn.Body, func(x ast.Node) bool {
				if x == nil {
					stack = stack[:len(stack)-1]
					return true
				}
				stack = append(stack, x)
				sel, ok := x.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				inner, ok := sel.X.(*ast.SelectorExpr)
				if !ok || inner.Sel.Name != "Faults" {
					return true
				}
				reads++
				if !guardedFunc && !guardedByFaultsOn(stack) {
					t.Errorf("%s: Faults.%s read without `faultsOn &&`", fset.Position(sel.Pos()), sel.Sel.Name)
				}
				return true
			})
		}
	}
	if reads < 10 {
		t.Fatalf("found only %d reads of Config.Faults: the scan is broken", reads)
	}
}

// guardedByFaultsOn reports whether the innermost node of stack is the
// right operand of an && whose left operand has faultsOn as a conjunct.
func guardedByFaultsOn(stack []ast.Node) bool {
	for i := len(stack) - 2; i >= 0; i-- {
		b, ok := stack[i].(*ast.BinaryExpr)
		if !ok {
			if _, paren := stack[i].(*ast.ParenExpr); paren {
				continue
			}
			return false
		}
		if b.Op != token.LAND || b.Y != stack[i+1] {
			return false
		}
		return conjunctFaultsOn(b.X)
	}
	return false
}

// conjunctFaultsOn reports whether faultsOn is one of the operands of the
// chain of && that x is.
func conjunctFaultsOn(x ast.Expr) bool {
	switch x := x.(type) {
	case *ast.Ident:
		return x.Name == "faultsOn"
	case *ast.ParenExpr:
		return conjunctFaultsOn(x.X)
	case *ast.BinaryExpr:
		return x.Op == token.LAND && (conjunctFaultsOn(x.X) || conjunctFaultsOn(x.Y))
	}
	return false
}

// returnsUnlessFaultsOn reports whether body starts with
// `if !faultsOn { return ... }`.
func returnsUnlessFaultsOn(body *ast.BlockStmt) bool {
	if len(body.List) == 0 {
		return false
	}
	s, ok := body.List[0].(*ast.IfStmt)
	if !ok || s.Init != nil || s.Else != nil {
		return false
	}
	u, ok := s.Cond.(*ast.UnaryExpr)
	if !ok || u.Op != token.NOT {
		return false
	}
	id, ok := u.X.(*ast.Ident)
	if !ok || id.Name != "faultsOn" || len(s.Body.List) == 0 {
		return false
	}
	_, ret := s.Body.List[len(s.Body.List)-1].(*ast.ReturnStmt)
	return ret
}
