package domain

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// declared reads the domain's own source for what makes an event type: the
// receivers of EventType methods and the values of the Type... constants.
// The registry is a list by hand, so this reads what a new event adds
// without it.
func declared(t *testing.T) (types, names []string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.Name == "EventType" && d.Recv != nil {
					recv := d.Recv.List[0].Type
					if star, ok := recv.(*ast.StarExpr); ok {
						recv = star.X
					}
					types = append(types, recv.(*ast.Ident).Name)
				}
			case *ast.GenDecl:
				if d.Tok != token.CONST {
					continue
				}
				for _, spec := range d.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if !strings.HasPrefix(n.Name, "Type") || i >= len(vs.Values) {
							continue
						}
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, err := strconv.Unquote(lit.Value)
							if err != nil {
								t.Fatal(err)
							}
							names = append(names, v)
						}
					}
				}
			}
		}
	}
	return types, names
}

// An event type that its aggregate's file does not list could be appended
// but never loaded again: every one declared must be in Kinds, once.
func TestEveryEventIsRegistered(t *testing.T) {
	var registered, goTypes []string
	for _, k := range Kinds() {
		if slices.Contains(registered, k.Name) {
			t.Errorf("%s is registered twice", k.Name)
		}
		registered = append(registered, k.Name)
		e := k.New()
		if e.EventType() != k.Name {
			t.Errorf("the kind %s makes a %T, whose type is %s", k.Name, e, e.EventType())
		}
		goTypes = append(goTypes, reflect.TypeOf(e).Elem().Name())
		if got, ok := NewEvent(k.Name); !ok || reflect.TypeOf(got) != reflect.TypeOf(e) {
			t.Errorf("NewEvent(%q) = %T, %v", k.Name, got, ok)
		}
	}
	types, names := declared(t)
	if len(types) == 0 || len(names) == 0 {
		t.Fatalf("found %d event types and %d type names in the source: the reading of it is broken", len(types), len(names))
	}
	for _, typ := range types {
		if !slices.Contains(goTypes, typ) {
			t.Errorf("%s has an EventType but is in no aggregate's list of events", typ)
		}
	}
	for _, n := range names {
		if !slices.Contains(registered, n) {
			t.Errorf("the type name %q is registered by no aggregate", n)
		}
	}
	if _, ok := NewEvent("NoSuchEvent"); ok {
		t.Error("NewEvent made an event of an unknown type")
	}
}
