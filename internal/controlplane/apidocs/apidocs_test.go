package apidocs

import (
	"bytes"
	"testing"
)

func TestRenderRejectsBrokenDocuments(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"not yaml", "paths: [unclosed"},
		{"paths not a map", "paths: [1, 2]"},
		{"unknown parameter", "paths:\n  /x:\n    get:\n      parameters: [{$ref: '#/components/parameters/Nope'}]\n"},
		{"unknown response", "paths:\n  /x:\n    get:\n      responses: {'200': {$ref: '#/components/responses/Nope'}}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Render([]byte(tc.doc)); err == nil {
				t.Fatal("rendered a broken document")
			}
		})
	}
}

func TestRenderShowsOperationsAndSchemas(t *testing.T) {
	doc := `openapi: 3.0.3
info: {title: T, version: v1, description: D}
tags: [{name: things}]
paths:
  /things/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get:
      tags: [things]
      operationId: getThing
      summary: One thing.
      responses:
        '200': {description: The thing., content: {application/json: {schema: {$ref: '#/components/schemas/Thing'}}}}
components:
  schemas:
    Thing: {type: object, properties: {name: {type: string}}}
`
	page, err := Render([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/things/{id}", "One thing.", "Thing", "getThing"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
}
