package eventstore

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/authd/authd/domain"
)

// filler sets every exported field of a value to something distinct from its
// zero and from every other field's, the same each time for a new filler.
type filler struct {
	n       int
	strings []string // every string it set, in order
}

func (f *filler) fill(v reflect.Value) {
	f.n++
	switch v.Kind() {
	case reflect.String:
		s := fmt.Sprintf("value-%d", f.n)
		f.strings = append(f.strings, s)
		v.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(f.n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(f.n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Array:
		for i := range v.Len() {
			f.fill(v.Index(i))
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range s.Len() {
			f.fill(s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		f.fill(k)
		f.fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		f.fill(p.Elem())
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 1, 0, 0, f.n, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				f.fill(v.Field(i))
			}
		}
	}
}

// filled returns an event of kind k with every field set, secrets included,
// and the strings of its secret part.
func filled(k domain.Kind) (e domain.Event, secrets []string) {
	e = k.New()
	var f filler
	f.fill(reflect.ValueOf(e).Elem())
	if sc, ok := e.(domain.SecretCarrier); ok {
		var s filler
		s.n = f.n
		s.fill(reflect.ValueOf(sc.Secrets()).Elem())
		secrets = s.strings
	}
	return e, secrets
}

// withoutSecrets is e with its secret part zero, as a reader of the public
// part alone sees it.
func withoutSecrets(e domain.Event) domain.Event {
	if sc, ok := e.(domain.SecretCarrier); ok {
		reflect.ValueOf(sc.Secrets()).Elem().SetZero()
	}
	return e
}

// Every registered event comes back from the log as it went in, secrets
// included; from NATS and from a read without secrets it comes back with
// every public field and no secret.
func TestEveryEventRoundTripsThroughTheCodec(t *testing.T) {
	for _, k := range domain.Kinds() {
		t.Run(k.Name, func(t *testing.T) {
			in, secrets := filled(k)
			enc, err := Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			if enc.Type != k.Name {
				t.Fatalf("encoded as type %q", enc.Type)
			}
			for _, s := range secrets {
				if strings.Contains(string(enc.Data), s) {
					t.Errorf("the public part holds the secret %q: %s", s, enc.Data)
				}
			}
			got, err := Decode(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, in) {
				t.Errorf("decoded with its secrets:\n got %#v\nwant %#v", got, in)
			}

			public, _ := filled(k)
			public = withoutSecrets(public)
			enc.Secret = nil
			got, err = Decode(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, public) {
				t.Errorf("decoded without its secrets:\n got %#v\nwant %#v", got, public)
			}

			enc.ID, enc.Commit = [16]byte{1}, Cursor{Tx: 7, Position: 3}
			enc.Position = enc.Commit.Position
			body, err := enc.MarshalEnvelope()
			if err != nil {
				t.Fatal(err)
			}
			wire, err := FromMessage(nats.Header{HeaderTx: {enc.Commit.txText()}}, body)
			if err != nil {
				t.Fatal(err)
			}
			if wire.Commit != enc.Commit || wire.Type != k.Name {
				t.Errorf("from NATS: type %q at %s, want %q at %s", wire.Type, wire.Commit, k.Name, enc.Commit)
			}
			got, err = Decode(wire)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, public) {
				t.Errorf("decoded from NATS:\n got %#v\nwant %#v", got, public)
			}
		})
	}
}

func TestDecodeRefusesAnUnknownType(t *testing.T) {
	if _, err := Decode(Event{Type: "NoSuchEvent", Data: []byte(`{}`)}); err == nil {
		t.Fatal("an event of an unregistered type decoded")
	}
}

// A load starts from the newest event whose type ends in SnapshotSuffix.
func TestTheTwoFactorSnapshotIsOneLoadsStartFrom(t *testing.T) {
	if !strings.HasSuffix(domain.TypeTwoFactorSnapshotTaken, SnapshotSuffix) {
		t.Fatalf("%s does not end in %s: loads would not start from it", domain.TypeTwoFactorSnapshotTaken, SnapshotSuffix)
	}
}

// Every event's personal fields (an email, a name, an IP address, a user
// agent, a device, a Google subject) are in its personal part, sealed under
// its user's key, and none is left in the public data: a field whose name
// says it is personal and is not tagged so fails here.
func TestPersonalFieldsOfEveryEventLandInItsPersonalPart(t *testing.T) {
	client := []string{"device", "ip", "user_agent"}
	want := map[string][]string{
		domain.TypeUserRegistered:       {"email", "name", "tenant_name"},
		domain.TypeRegistrationRenewed:  {"name", "tenant_name"},
		domain.TypeProfileUpdated:       {"name"},
		domain.TypeEmailChangeRequested: {"email", "new_email"},
		domain.TypeEmailChanged:         {"new_email", "old_email"},
		domain.TypeTenantCreated:        {"name"},
		domain.TypePasskeyAdded:         {"name"},
		domain.TypePasskeyRenamed:       {"name"},
		domain.TypeGoogleLinked:         {"subject"},
		domain.TypeSessionStarted:       client,
		domain.TypeSessionRefreshed:     client,
		domain.TypeReauthenticated:      client,
	}
	personalWords := []string{"email", "name", "ip", "agent", "device", "subject", "address", "phone"}
	for _, k := range domain.Kinds() {
		in, _ := filled(k)
		enc, err := Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		var data, personal map[string]json.RawMessage
		if err := json.Unmarshal(enc.Data, &data); err != nil {
			t.Fatal(err)
		}
		if len(enc.Personal) > 0 {
			if err := json.Unmarshal(enc.Personal, &personal); err != nil {
				t.Fatal(err)
			}
		}
		if got := slices.Sorted(maps.Keys(personal)); !slices.Equal(got, want[k.Name]) {
			t.Errorf("%s: personal part has %q, want %q", k.Name, got, want[k.Name])
		}
		if got := PersonalFields(k.Name); !slices.Equal(slices.Sorted(slices.Values(got)), want[k.Name]) {
			t.Errorf("%s: PersonalFields %q, want %q", k.Name, got, want[k.Name])
		}
		for key := range data {
			for _, word := range strings.Split(key, "_") {
				if slices.Contains(personalWords, word) {
					t.Errorf("%s: field %q looks personal but is in the public data", k.Name, key)
				}
			}
		}
	}
}

// The personal part splices back into the data as one JSON object,
// whatever either side holds.
func TestMergeObjects(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{`{"a": 1}`, `{"b":"x"}`, `{"a": 1,"b":"x"}`},
		{`{}`, `{"b":"x"}`, `{"b":"x"}`},
		{`{"a":1}`, ``, `{"a":1}`},
		{`{"a":1}`, `{ }`, `{"a":1}`},
		{``, `{"b":2}`, `{"b":2}`},
	} {
		got := string(mergeObjects([]byte(c.a), []byte(c.b)))
		if got != c.want || (got != "" && !json.Valid([]byte(got))) {
			t.Errorf("merge %s and %s = %s, want %s", c.a, c.b, got, c.want)
		}
	}
}
