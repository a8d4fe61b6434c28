package mail

import (
	"bytes"
	"cmp"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	texttemplate "text/template"
	"text/template/parse"
	"unicode"

	"golang.org/x/text/language"
)

// builtinFS holds the English mails, named as an operator names an override.
//
//go:embed templates
var builtinFS embed.FS

// builtinLocale is the language of the built-in mails, and the last resort
// of every lookup.
const builtinLocale = "en"

// partSuffixes end a mail's three files, <mail>.<locale> followed by one of
// them, in the order of the parts: subject, text, HTML. The subject's is
// tried first, since it ends like the text's.
func partSuffixes() [3]string { return [3]string{".subject.txt", ".txt", ".html"} }

// parts is one mail in one locale, parsed.
type parts struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// Templates renders every mail authd sends: the built-in English ones, or an
// operator's in their place, per mail and locale. It is read-only once
// loaded, so safe for concurrent use.
type Templates struct {
	product string
	// mails maps a mail's name and a canonical BCP 47 tag to its templates;
	// every mail has builtinLocale.
	mails map[string]map[string]*parts
}

// Builtin returns the built-in English mails, naming product in them.
func Builtin(product string) (*Templates, error) {
	return Load(product, "")
}

// Load returns the built-in mails with the files in dir (AUTHD_MAIL_TEMPLATES)
// in their place; an empty dir keeps the built-in ones. Every file is parsed
// and tried on sample data now, so a template that does not parse, names an
// unknown mail or locale, or uses a field its mail does not have fails the
// start instead of a mail; the error names each such file.
func Load(product, dir string) (*Templates, error) {
	product, err := cleanProduct(product)
	if err != nil {
		return nil, err
	}
	t := &Templates{product: product, mails: map[string]map[string]*parts{}}
	builtin, err := fs.Sub(builtinFS, "templates")
	if err != nil {
		return nil, fmt.Errorf("mail: built-in templates: %w", err)
	}
	if err := t.add(builtin, func(name string) string { return "built-in " + name }); err != nil {
		return nil, err
	}
	for _, m := range catalogue() {
		if t.mails[m.name][builtinLocale] == nil {
			return nil, fmt.Errorf("mail: no built-in template for %s", m.name)
		}
	}
	if dir == "" {
		return t, nil
	}
	if err := t.add(os.DirFS(dir), func(name string) string { return filepath.Join(dir, name) }); err != nil {
		return nil, fmt.Errorf("mail templates in %s (AUTHD_MAIL_TEMPLATES):\n%w", dir, err)
	}
	return t, nil
}

// cleanProduct keeps control characters out of the product name: it lands in
// the Subject header and in prose, where a line break is never wanted.
func cleanProduct(product string) (string, error) {
	product = oneLine(product)
	if product == "" {
		return "", errors.New("mail: product name is empty")
	}
	return product, nil
}

// oneLine turns control characters, line breaks included, into spaces.
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// mailLocale names one mail in one locale; the locale is canonical BCP 47.
type mailLocale struct{ mail, locale string }

// source is the text of one mail in one locale, as read.
type source struct {
	files [3]string // shown names of the subject, text and HTML files; "" when missing
	text  [3]string
}

// add reads the flat folder fsys, where each file is
// <mail>.<locale>.subject.txt, <mail>.<locale>.txt or <mail>.<locale>.html,
// and puts what it holds in place of what t had. It reports every bad file,
// joined, so an operator fixes them all in one go.
func (t *Templates) add(fsys fs.FS, shown func(string) string) error {
	known := map[string]mailSpec{}
	for _, m := range catalogue() {
		known[m.name] = m
	}
	found, errs := read(fsys, shown, known)
	keys := slices.SortedFunc(maps.Keys(found), func(a, b mailLocale) int {
		return cmp.Or(strings.Compare(a.mail, b.mail), strings.Compare(a.locale, b.locale))
	})
	for _, k := range keys {
		p, err := parseMail(known[k.mail], k.mail+"."+k.locale, found[k], t.product, shown)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t.mails[k.mail] == nil {
			t.mails[k.mail] = map[string]*parts{}
		}
		t.mails[k.mail][k.locale] = p
	}
	return errors.Join(errs...)
}

// read gathers the files of fsys by mail and locale, and the problems of
// those it cannot place.
func read(fsys fs.FS, shown func(string) string, known map[string]mailSpec) (map[mailLocale]*source, []error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, []error{fmt.Errorf("mail: read templates: %w", err)}
	}
	found := map[mailLocale]*source{}
	var errs []error
	for _, e := range entries {
		// Hidden entries are an editor's or a mount's (a Kubernetes ConfigMap
		// keeps its files behind ..data), never a template.
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		file := shown(e.Name())
		if e.IsDir() {
			errs = append(errs, fmt.Errorf("%s: a folder; templates are files side by side, such as verify.de.html", file))
			continue
		}
		k, part, err := splitName(e.Name())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
			continue
		}
		if _, ok := known[k.mail]; !ok {
			errs = append(errs, fmt.Errorf("%s: %q is not a mail authd sends (those are %s)", file, k.mail, strings.Join(mailNames(), ", ")))
			continue
		}
		src, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
			continue
		}
		if found[k] == nil {
			found[k] = &source{}
		}
		if prev := found[k].files[part]; prev != "" {
			errs = append(errs, fmt.Errorf("%s: the same template as %s (locales are compared in their canonical form, %s)", file, prev, k.locale))
			continue
		}
		found[k].files[part], found[k].text[part] = file, string(src)
	}
	return found, errs
}

// splitName reads <mail>.<locale><suffix>, and which part the suffix says
// the file is; the locale comes back canonical (de-ch is de-CH), so that
// lookups find it however it was spelled.
func splitName(file string) (k mailLocale, part int, err error) {
	rest := ""
	for i, suffix := range partSuffixes() {
		if r, ok := strings.CutSuffix(file, suffix); ok {
			rest, part = r, i
			break
		}
	}
	name, locale, ok := strings.Cut(rest, ".")
	if rest == "" || !ok || name == "" || strings.Contains(locale, ".") {
		return mailLocale{}, 0, errors.New("not named <mail>.<locale>.subject.txt, <mail>.<locale>.txt or <mail>.<locale>.html")
	}
	tag, err := language.Parse(locale)
	if err != nil || tag == language.Und {
		return mailLocale{}, 0, fmt.Errorf("%q is not a BCP 47 locale such as de or de-CH", locale)
	}
	return mailLocale{mail: name, locale: tag.String()}, part, nil
}

// parseMail parses one mail's three files and renders them with the mail's
// sample data, which is how a field the mail does not have is found now and
// not when the mail is sent.
func parseMail(m mailSpec, what string, src *source, product string, shown func(string) string) (*parts, error) {
	var have, missing []string
	for i, suffix := range partSuffixes() {
		if src.files[i] == "" {
			missing = append(missing, shown(what+suffix))
		} else {
			have = append(have, src.files[i])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: a mail needs all three of its files; %s missing", strings.Join(have, ", "), strings.Join(missing, " and "))
	}
	var p parts
	var err error
	if p.subject, err = texttemplate.New(what).Option("missingkey=error").Parse(src.text[0]); err != nil {
		return nil, fmt.Errorf("%s: %w", src.files[0], err)
	}
	if p.text, err = texttemplate.New(what).Option("missingkey=error").Parse(src.text[1]); err != nil {
		return nil, fmt.Errorf("%s: %w", src.files[1], err)
	}
	if p.html, err = htmltemplate.New(what).Option("missingkey=error").Parse(src.text[2]); err != nil {
		return nil, fmt.Errorf("%s: %w", src.files[2], err)
	}
	sample := m.sample(product)
	// The trees of each part and of what it {{define}}s.
	var trees [3][]*parse.Tree
	for _, d := range p.subject.Templates() {
		trees[0] = append(trees[0], d.Tree)
	}
	for _, d := range p.text.Templates() {
		trees[1] = append(trees[1], d.Tree)
	}
	for _, d := range p.html.Templates() {
		trees[2] = append(trees[2], d.Tree)
	}
	for i := range trees {
		for _, tree := range trees[i] {
			if err := checkFields(tree, reflect.TypeOf(sample)); err != nil {
				return nil, fmt.Errorf("%s: %w", src.files[i], err)
			}
		}
	}
	out, failed, err := p.render(sample)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.files[failed], err)
	}
	for i, body := range []string{out.Subject, out.Text, out.HTML} {
		if strings.TrimSpace(body) == "" {
			return nil, fmt.Errorf("%s: renders nothing", src.files[i])
		}
		if m.mustShow != "" && i > 0 && !strings.Contains(body, m.mustShow) {
			return nil, fmt.Errorf("%s: does not show the code ({{.Code}})", src.files[i])
		}
	}
	return &p, nil
}

// render executes the three templates with data; on failure it says which
// one failed (0 subject, 1 text, 2 HTML).
func (p *parts) render(data any) (Message, int, error) {
	var subject, text, html bytes.Buffer
	if err := p.subject.Execute(&subject, data); err != nil {
		return Message{}, 0, err
	}
	if err := p.text.Execute(&text, data); err != nil {
		return Message{}, 1, err
	}
	if err := p.html.Execute(&html, data); err != nil {
		return Message{}, 2, err
	}
	// A subject is one header line whatever the data or the template put in.
	return Message{Subject: oneLine(subject.String()), Text: text.String(), HTML: html.String()}, 0, nil
}

// message renders mail name for a recipient of locale: the template of that
// exact locale (de-CH), else of its language (de), else English.
func (t *Templates) message(name, locale, to string, data any) (Message, error) {
	byLocale := t.mails[name]
	p := byLocale[builtinLocale]
	if tag, err := language.Parse(locale); err == nil {
		base, _ := tag.Base()
		if q, ok := byLocale[tag.String()]; ok {
			p = q
		} else if q, ok := byLocale[base.String()]; ok {
			p = q
		}
	}
	if p == nil {
		return Message{}, fmt.Errorf("mail: no template for %s", name)
	}
	m, _, err := p.render(data)
	if err != nil {
		return Message{}, fmt.Errorf("mail: render %s: %w", name, err)
	}
	m.To = to
	return m, nil
}

// mailSpec is one mail authd sends: its name (the start of its file names),
// the sample data its templates are tried on at load, and what every body of
// it must show.
type mailSpec struct {
	name     string
	sample   func(product string) any
	mustShow string
}

// catalogue is every mail, the code mails first.
func catalogue() []mailSpec {
	var out []mailSpec
	for _, p := range purposes() {
		out = append(out, mailSpec{name: p.String(), sample: sampleCode, mustShow: sampleCodeValue})
	}
	for _, e := range noticeEvents() {
		out = append(out, mailSpec{name: e, sample: sampleNotice})
	}
	return out
}

func mailNames() []string {
	var out []string
	for _, m := range catalogue() {
		out = append(out, m.name)
	}
	return out
}
