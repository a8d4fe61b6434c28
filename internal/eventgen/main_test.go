package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const domainDir = "../../domain"

// The committed events_gen.go is what the Type constants make now: a
// constant added without running go generate fails here.
func TestTheDomainsEventsFileIsCurrent(t *testing.T) {
	want, err := generate(domainDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(domainDir, generatedFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("domain/%s is stale: run go generate ./domain", generatedFile)
	}
}

// A source file as a domain file would hold it, in a package of its own.
func write(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAConstantDeclaresTheEventOfItsName(t *testing.T) {
	src, err := generate(write(t, `package domain
const (
	TypeThingDone = "ThingDone"
	MaxThings     = 3
)
type ThingDone struct{}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"func (ThingDone) EventType() string { return TypeThingDone }", "kind[ThingDone]()"} {
		if !strings.Contains(string(src), want) {
			t.Errorf("generated file lacks %q:\n%s", want, src)
		}
	}
	if strings.Contains(string(src), "MaxThings") {
		t.Errorf("a constant not named Type<X> became an event:\n%s", src)
	}
}

func TestAnEventOutsideTheRegistryIsRefused(t *testing.T) {
	for name, src := range map[string]string{
		"EventType by hand": "package domain\nconst TypeA = \"A\"\ntype A struct{}\ntype B struct{}\nfunc (B) EventType() string { return \"B\" }\n",
		"no such type":      "package domain\nconst TypeA = \"A\"\n",
	} {
		if _, err := generate(write(t, src)); err == nil {
			t.Errorf("%s: generated", name)
		}
	}
}
