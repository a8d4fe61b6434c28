package eventstore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/authd/authd/domain"
)

// Personal data (DESIGN rule 11) is kept apart from the rest of an event:
// the fields domain tags personal:"true" and the metadata's ip and
// user_agent are sealed together under the event's user's own data key
// (AES-256-GCM, the event id as associated data) in events.personal. Erasure
// destroys that key (Shred), and with it every copy of those fields, in the
// log and in its backups, while ids, types and times stay.

// personalKeys is, per event type, the JSON names of its personal fields:
// found by reflection once, then only read.
var personalKeys = sync.OnceValue(func() map[string][]string {
	m := map[string][]string{}
	for _, k := range domain.Kinds() {
		if keys := personalKeysOf(reflect.TypeOf(k.New()).Elem()); len(keys) > 0 {
			m[k.Name] = keys
		}
	}
	return m
})

// personalKeysOf walks t's fields as encoding/json does, into embedded
// structs (domain.Client), for those tagged personal.
func personalKeysOf(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported() && !f.Anonymous:
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			keys = append(keys, personalKeysOf(f.Type)...)
			continue
		case f.Tag.Get("personal") != "true":
			continue
		case name == "":
			name = f.Name
		}
		keys = append(keys, name)
	}
	return keys
}

// PersonalFields returns the JSON names of the personal fields of events of
// type typ, for a reader that shows which are gone from an erased event.
func PersonalFields(typ string) []string { return slices.Clone(personalKeys()[typ]) }

// splitPersonal takes the personal fields of an event of type typ out of
// its JSON object data: the public rest, and the personal fields as an
// object of their own (nil when the event has none set).
func splitPersonal(typ string, data []byte) (public, personal []byte, err error) {
	keys := personalKeys()[typ]
	if len(keys) == 0 {
		return data, nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, nil, err
	}
	own := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		if v, ok := fields[k]; ok {
			own[k] = v
			delete(fields, k)
		}
	}
	if len(own) == 0 {
		return data, nil, nil
	}
	if public, err = json.Marshal(fields); err != nil {
		return nil, nil, err
	}
	if personal, err = json.Marshal(own); err != nil {
		return nil, nil, err
	}
	return public, personal, nil
}

// mergeObjects joins two JSON objects that share no key into one, by
// splicing their bytes: a read merges an event's personal fields back into
// its data for every event of a rebuild, where decoding and encoding them
// again would cost more than the read.
func mergeObjects(a, b []byte) []byte {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	switch {
	case isEmptyObject(b):
		return a
	case isEmptyObject(a):
		return b
	}
	out := make([]byte, 0, len(a)+len(b))
	out = append(out, a[:len(a)-1]...)
	out = append(out, ',')
	return append(out, b[1:]...)
}

func isEmptyObject(b []byte) bool {
	return len(b) < 2 || len(bytes.TrimSpace(b[1:len(b)-1])) == 0
}

// hasPersonal says whether e carries anything personal to seal.
func (e *Event) hasPersonal() bool {
	return e.Metadata.IP != "" || e.Metadata.UserAgent != "" || !isEmptyObject(e.Personal)
}

// personalVersion begins every sealed personal part, so that its layout can
// change later.
const personalVersion = 1

// marshalPersonal lays out what is sealed of e: the version, then the ip and
// the user agent, each after its length, then the personal fields' JSON. A
// rebuild opens one for every event; JSON here cost more than the AES.
func marshalPersonal(e *Event) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen32+len(e.Metadata.IP)+len(e.Metadata.UserAgent)+len(e.Personal))
	b = append(b, personalVersion)
	b = binary.AppendUvarint(b, uint64(len(e.Metadata.IP)))
	b = append(b, e.Metadata.IP...)
	b = binary.AppendUvarint(b, uint64(len(e.Metadata.UserAgent)))
	b = append(b, e.Metadata.UserAgent...)
	if !isEmptyObject(e.Personal) {
		b = append(b, e.Personal...)
	}
	return b
}

// unmarshalPersonal fills e with what marshalPersonal laid out.
func unmarshalPersonal(e *Event, b []byte) error {
	if len(b) == 0 || b[0] != personalVersion {
		return errors.New("personal part of an unknown layout")
	}
	b = b[1:]
	var fields [2]string
	for i := range fields {
		n, used := binary.Uvarint(b)
		if used <= 0 || uint64(len(b)-used) < n {
			return errors.New("personal part cut short")
		}
		fields[i], b = string(b[used:used+int(n)]), b[used+int(n):]
	}
	e.Metadata.IP, e.Metadata.UserAgent = fields[0], fields[1]
	if len(b) > 0 {
		e.Data = mergeObjects(e.Data, b)
	}
	return nil
}

// newDataKey makes a user's data key: 32 random bytes.
func newDataKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return k, nil
}

func dataCipher(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return cipher.NewGCM(block)
}

// sealPersonal seals plain under a user's data key, bound to the event id:
// nonce || ciphertext.
func sealPersonal(aead cipher.AEAD, plain, id []byte) ([]byte, error) {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal personal part: nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, plain, id), nil
}

func openPersonal(aead cipher.AEAD, sealed, id []byte) ([]byte, error) {
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("personal part too short")
	}
	return aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], id)
}
