// Package apidocs renders an OpenAPI 3 document as one self-contained
// HTML page (the control plane's /docs): operations grouped by tag, their
// parameters, bodies and responses, and the schemas as YAML. It is written
// here rather than served by a JavaScript viewer so the page works offline
// and carries no third-party script.
package apidocs

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The parts of an OpenAPI 3 document the docs page shows.
type oaDoc struct {
	Info struct {
		Title       string `yaml:"title"`
		Version     string `yaml:"version"`
		Description string `yaml:"description"`
	} `yaml:"info"`
	Tags []struct {
		Name string `yaml:"name"`
	} `yaml:"tags"`
	// Nodes keep the document's order.
	Paths      yaml.Node `yaml:"paths"`
	Components struct {
		Parameters map[string]oaParam    `yaml:"parameters"`
		Responses  map[string]oaResponse `yaml:"responses"`
		Schemas    yaml.Node             `yaml:"schemas"`
	} `yaml:"components"`
}

type oaParam struct {
	Ref         string    `yaml:"$ref"`
	Name        string    `yaml:"name"`
	In          string    `yaml:"in"`
	Description string    `yaml:"description"`
	Required    bool      `yaml:"required"`
	Schema      *oaSchema `yaml:"schema"`
}

type oaSchema struct {
	Ref     string      `yaml:"$ref"`
	Type    string      `yaml:"type"`
	Format  string      `yaml:"format"`
	Enum    []string    `yaml:"enum"`
	Items   *oaSchema   `yaml:"items"`
	AllOf   []*oaSchema `yaml:"allOf"`
	Default any         `yaml:"default"`
	Minimum *float64    `yaml:"minimum"`
	Maximum *float64    `yaml:"maximum"`
}

type oaMedia struct {
	Schema *oaSchema `yaml:"schema"`
}

type oaResponse struct {
	Ref         string             `yaml:"$ref"`
	Description string             `yaml:"description"`
	Content     map[string]oaMedia `yaml:"content"`
}

type oaOperation struct {
	Tags        []string  `yaml:"tags"`
	OperationID string    `yaml:"operationId"`
	Summary     string    `yaml:"summary"`
	Description string    `yaml:"description"`
	Parameters  []oaParam `yaml:"parameters"`
	RequestBody *struct {
		Required    bool               `yaml:"required"`
		Description string             `yaml:"description"`
		Content     map[string]oaMedia `yaml:"content"`
	} `yaml:"requestBody"`
	Responses yaml.Node `yaml:"responses"`
	Security  yaml.Node `yaml:"security"`
}

// What the template renders.
type docsPage struct {
	Title, Version, Description string
	Tags                        []*docsTag
	Schemas                     []docsSchema
}

type docsTag struct {
	Name string
	Ops  []docsOp
}

type docsOp struct {
	Method, Path, ID, Summary, Description string
	Public                                 bool
	Params                                 []docsParam
	Body                                   string
	Responses                              []docsResponse
}

type docsParam struct {
	Name, In, Type, Description string
	Required                    bool
}

type docsResponse struct{ Code, Description, Type string }

type docsSchema struct{ Name, YAML string }

var httpMethods = []string{"get", "put", "post", "patch", "delete", "head", "options"}

// Render turns the OpenAPI document into one self-contained HTML page
// (no scripts, no external assets: the control plane may have no
// internet, and neither may its users).
func Render(doc []byte) ([]byte, error) {
	var d oaDoc
	if err := yaml.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("parse openapi document: %w", err)
	}
	page := docsPage{Title: d.Info.Title, Version: d.Info.Version, Description: d.Info.Description}
	byTag := map[string]*docsTag{}
	tagOf := func(name string) *docsTag {
		t := byTag[name]
		if t == nil {
			t = &docsTag{Name: name}
			byTag[name] = t
		}
		return t
	}
	for _, t := range d.Tags {
		page.Tags = append(page.Tags, tagOf(t.Name))
	}

	if d.Paths.Kind != yaml.MappingNode {
		return nil, errors.New("openapi document: paths is not a mapping")
	}
	for i := 0; i+1 < len(d.Paths.Content); i += 2 {
		path, item := d.Paths.Content[i].Value, d.Paths.Content[i+1]
		var shared struct {
			Parameters []oaParam `yaml:"parameters"`
		}
		if err := item.Decode(&shared); err != nil {
			return nil, fmt.Errorf("openapi path %s: %w", path, err)
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			method := item.Content[j].Value
			if !isHTTPMethod(method) {
				continue
			}
			var op oaOperation
			if err := item.Content[j+1].Decode(&op); err != nil {
				return nil, fmt.Errorf("openapi %s %s: %w", method, path, err)
			}
			o, err := d.operation(path, method, op, shared.Parameters)
			if err != nil {
				return nil, err
			}
			tag := "other"
			if len(op.Tags) > 0 {
				tag = op.Tags[0]
			}
			t := byTag[tag]
			if t == nil {
				t = tagOf(tag)
				page.Tags = append(page.Tags, t)
			}
			t.Ops = append(t.Ops, o)
		}
	}
	kept := page.Tags[:0]
	for _, t := range page.Tags {
		if len(t.Ops) > 0 {
			kept = append(kept, t)
		}
	}
	page.Tags = kept

	for i := 0; i+1 < len(d.Components.Schemas.Content); i += 2 {
		out, err := yaml.Marshal(d.Components.Schemas.Content[i+1])
		if err != nil {
			return nil, fmt.Errorf("openapi schema %s: %w", d.Components.Schemas.Content[i].Value, err)
		}
		page.Schemas = append(page.Schemas, docsSchema{Name: d.Components.Schemas.Content[i].Value, YAML: string(out)})
	}

	var buf bytes.Buffer
	if err := docsTemplate.Execute(&buf, page); err != nil {
		return nil, fmt.Errorf("render docs: %w", err)
	}
	return buf.Bytes(), nil
}

func isHTTPMethod(m string) bool {
	for _, h := range httpMethods {
		if m == h {
			return true
		}
	}
	return false
}

func (d *oaDoc) operation(path, method string, op oaOperation, shared []oaParam) (docsOp, error) {
	o := docsOp{
		Method: strings.ToUpper(method), Path: path, ID: op.OperationID,
		Summary: op.Summary, Description: op.Description,
		// security: [] on an operation means no credentials.
		Public: op.Security.Kind == yaml.SequenceNode && len(op.Security.Content) == 0,
	}
	for _, p := range append(append([]oaParam{}, shared...), op.Parameters...) {
		if p.Ref != "" {
			name := refName(p.Ref)
			resolved, ok := d.Components.Parameters[name]
			if !ok {
				return o, fmt.Errorf("openapi %s %s: unknown parameter %s", method, path, p.Ref)
			}
			p = resolved
		}
		o.Params = append(o.Params, docsParam{
			Name: p.Name, In: p.In, Type: schemaText(p.Schema), Description: p.Description,
			Required: p.Required || p.In == "path",
		})
	}
	if rb := op.RequestBody; rb != nil {
		var parts []string
		for _, ct := range sortedKeys(rb.Content) {
			parts = append(parts, ct+": "+schemaText(rb.Content[ct].Schema))
		}
		o.Body = strings.Join(parts, "; ")
		if !rb.Required {
			o.Body += " (optional)"
		}
	}
	for i := 0; i+1 < len(op.Responses.Content); i += 2 {
		code := op.Responses.Content[i].Value
		var resp oaResponse
		if err := op.Responses.Content[i+1].Decode(&resp); err != nil {
			return o, fmt.Errorf("openapi %s %s response %s: %w", method, path, code, err)
		}
		if resp.Ref != "" {
			resolved, ok := d.Components.Responses[refName(resp.Ref)]
			if !ok {
				return o, fmt.Errorf("openapi %s %s: unknown response %s", method, path, resp.Ref)
			}
			resp = resolved
		}
		var types []string
		for _, ct := range sortedKeys(resp.Content) {
			types = append(types, ct+": "+schemaText(resp.Content[ct].Schema))
		}
		o.Responses = append(o.Responses, docsResponse{Code: code, Description: resp.Description, Type: strings.Join(types, "; ")})
	}
	return o, nil
}

func refName(ref string) string { return ref[strings.LastIndexByte(ref, '/')+1:] }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// schemaText is a one-line description of a schema: a named schema, a type
// with its format, bounds, enum and default.
func schemaText(s *oaSchema) string {
	if s == nil {
		return ""
	}
	if s.Ref != "" {
		return refName(s.Ref)
	}
	if len(s.AllOf) > 0 {
		var parts []string
		for _, a := range s.AllOf {
			parts = append(parts, schemaText(a))
		}
		return strings.Join(parts, " & ")
	}
	t := s.Type
	if t == "" {
		t = "any"
	}
	if s.Type == "array" && s.Items != nil {
		t = "array of " + schemaText(s.Items)
	}
	if s.Format != "" {
		t += " (" + s.Format + ")"
	}
	if len(s.Enum) > 0 {
		t += " one of " + strings.Join(s.Enum, ", ")
	}
	if s.Minimum != nil || s.Maximum != nil {
		lo, hi := "", ""
		if s.Minimum != nil {
			lo = strconv.FormatFloat(*s.Minimum, 'f', -1, 64)
		}
		if s.Maximum != nil {
			hi = strconv.FormatFloat(*s.Maximum, 'f', -1, 64)
		}
		t += " [" + lo + ".." + hi + "]"
	}
	if s.Default != nil {
		t += fmt.Sprintf(", default %v", s.Default)
	}
	return t
}

var docsTemplate = template.Must(template.New("docs").Funcs(template.FuncMap{
	"lower": strings.ToLower,
	"anchor": func(method, path string) string {
		r := strings.NewReplacer("/", "-", "{", "", "}", "")
		return strings.ToLower(method) + r.Replace(path)
	},
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} {{.Version}}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
nav{position:fixed;top:0;bottom:0;width:17rem;overflow:auto;padding:1rem;background:#eef1f5;border-right:1px solid #d6dbe3;box-sizing:border-box}
nav a{display:block;color:#1d2330;text-decoration:none;font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
nav h3{margin:1rem 0 .2rem;font-size:12px;text-transform:uppercase;color:#5a6478}
main{margin-left:17rem;padding:1rem 2rem;max-width:60rem}
.op{background:#fff;border:1px solid #d6dbe3;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.2rem;font:bold 12px monospace;color:#fff;border-radius:3px;padding:2px 6px;text-align:center;margin-right:.5rem}
.get{background:#2f7dd1}.post{background:#2e9e5b}.put{background:#b7791f}.patch{background:#8a5cc2}.delete{background:#c53b3b}.head,.options{background:#67707f}
code,.path{font-family:ui-monospace,monospace}
.path{font-weight:600}
table{border-collapse:collapse;width:100%;margin:.3rem 0;font-size:14px}
td,th{border-top:1px solid #e3e7ee;padding:3px 6px;text-align:left;vertical-align:top}
th{font-size:12px;color:#5a6478}
.desc{white-space:pre-wrap}
.tag{color:#5a6478;font-size:12px}
pre{background:#f3f5f8;padding:.5rem;overflow:auto;font-size:13px}
</style>
</head>
<body>
<nav>
<strong>{{.Title}}</strong> <span class="tag">{{.Version}}</span>
<a href="/openapi.yaml">openapi.yaml</a>
{{range .Tags}}<h3>{{.Name}}</h3>{{range .Ops}}<a href="#{{anchor .Method .Path}}"><code>{{.Method}}</code> {{.Path}}</a>{{end}}{{end}}
<h3><a href="#schemas">schemas</a></h3>
</nav>
<main>
<h1>{{.Title}} <span class="tag">{{.Version}}</span></h1>
<div class="desc">{{.Description}}</div>
{{range .Tags}}
<h2 id="tag-{{.Name}}">{{.Name}}</h2>
{{range .Ops}}
<div class="op" id="{{anchor .Method .Path}}">
<div><span class="m {{lower .Method}}">{{.Method}}</span><span class="path">{{.Path}}</span>{{if .ID}} <span class="tag">{{.ID}}</span>{{end}}{{if .Public}} <span class="tag">no authentication</span>{{end}}</div>
{{if .Summary}}<p>{{.Summary}}</p>{{end}}
{{if .Description}}<div class="desc">{{.Description}}</div>{{end}}
{{if .Params}}<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code>{{if .Required}} *{{end}}</td><td>{{.In}}</td><td>{{.Type}}</td><td>{{.Description}}</td></tr>
{{end}}</table>{{end}}
{{if .Body}}<p><b>Request body:</b> <code>{{.Body}}</code></p>{{end}}
<table><tr><th>status</th><th>description</th><th>body</th></tr>
{{range .Responses}}<tr><td>{{.Code}}</td><td>{{.Description}}</td><td><code>{{.Type}}</code></td></tr>
{{end}}</table>
</div>
{{end}}
{{end}}
<h2 id="schemas">Schemas</h2>
{{range .Schemas}}<h3 id="schema-{{.Name}}">{{.Name}}</h3><pre>{{.YAML}}</pre>
{{end}}
</main>
</body>
</html>
`))
