package mail

import (
	"fmt"
	"reflect"
	"text/template/parse"
)

// checkFields finds every field a template names on its data, also in the
// branches the sample data does not take, and fails on one the data does not
// have: rendering the sample alone would leave {{if}} a typo to a real mail.
// Inside {{with}} and {{range}} the dot is something else, so only $'s
// fields are checked there; what follows a function call or a (pipeline) is
// left to the sample rendering.
func checkFields(tree *parse.Tree, data reflect.Type) error {
	if tree == nil || tree.Root == nil {
		return nil
	}
	return fieldWalk{tree: tree, data: data, dotIsData: true}.walk(tree.Root)
}

// fieldWalk checks the fields of one tree against its data's type.
type fieldWalk struct {
	tree      *parse.Tree
	data      reflect.Type
	dotIsData bool // false inside {{with}} and {{range}}
}

func (w fieldWalk) walk(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n != nil {
			return walkAll(w, n.Nodes)
		}
	case *parse.ActionNode:
		return w.walk(n.Pipe)
	case *parse.TemplateNode:
		return w.walk(n.Pipe)
	case *parse.IfNode:
		return w.branch(&n.BranchNode, true)
	case *parse.WithNode:
		return w.branch(&n.BranchNode, false)
	case *parse.RangeNode:
		return w.branch(&n.BranchNode, false)
	case *parse.PipeNode:
		if n != nil {
			return walkAll(w, n.Cmds)
		}
	case *parse.CommandNode:
		return walkAll(w, n.Args)
	case *parse.ChainNode:
		// (pipeline).Field: the pipeline's fields are checked, not what
		// follows, whose type only running it tells.
		return w.walk(n.Node)
	case *parse.FieldNode:
		if w.dotIsData {
			return w.chain(n, n.Ident)
		}
	case *parse.VariableNode:
		// $ is the data; other variables hold whatever was assigned.
		if n.Ident[0] == "$" {
			return w.chain(n, n.Ident[1:])
		}
	}
	return nil
}

func walkAll[N parse.Node](w fieldWalk, nodes []N) error {
	for _, n := range nodes {
		if err := w.walk(n); err != nil {
			return err
		}
	}
	return nil
}

// branch checks a branch's pipeline and else part, which see the outer dot,
// and its body, which sees it only in an {{if}}.
func (w fieldWalk) branch(b *parse.BranchNode, bodySeesDot bool) error {
	if err := w.walk(b.Pipe); err != nil {
		return err
	}
	body := w
	body.dotIsData = w.dotIsData && bodySeesDot
	if err := body.walk(b.List); err != nil {
		return err
	}
	return w.walk(b.ElseList)
}

// chain follows .A.B.C from the data, each a field or a method.
func (w fieldWalk) chain(n parse.Node, idents []string) error {
	t := w.data
	for _, id := range idents {
		if m, ok := t.MethodByName(id); ok {
			if m.Type.NumOut() == 0 {
				return nil
			}
			t = m.Type.Out(0)
			continue
		}
		if t.Kind() == reflect.Struct {
			if f, ok := t.FieldByName(id); ok && f.IsExported() {
				t = f.Type
				continue
			}
		}
		at, _ := w.tree.ErrorContext(n)
		return fmt.Errorf("template: %s: %s has no field or method %s", at, t, id)
	}
	return nil
}
