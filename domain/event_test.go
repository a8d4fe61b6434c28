package domain

import (
	"reflect"
	"slices"
	"testing"
)

// Every kind makes an event of its own name, no name is registered twice,
// and NewEvent finds each one and nothing else.
func TestKindsMakeTheirEvents(t *testing.T) {
	var names []string
	for _, k := range Kinds() {
		if slices.Contains(names, k.Name) {
			t.Errorf("%s is registered twice", k.Name)
		}
		names = append(names, k.Name)
		e := k.New()
		if e.EventType() != k.Name {
			t.Errorf("the kind %s makes a %T, whose type is %s", k.Name, e, e.EventType())
		}
		if got, ok := NewEvent(k.Name); !ok || reflect.TypeOf(got) != reflect.TypeOf(e) {
			t.Errorf("NewEvent(%q) = %T, %v", k.Name, got, ok)
		}
	}
	if len(names) == 0 {
		t.Fatal("no event types are registered")
	}
	if _, ok := NewEvent("NoSuchEvent"); ok {
		t.Error("NewEvent made an event of an unknown type")
	}
}
