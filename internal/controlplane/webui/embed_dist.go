//go:build webui

package webui

import "embed"

// files is the dashboard built by `npm run build` in web/ (Vite writes it
// to dist/, which git ignores). Building with -tags webui without it
// fails at compile time, which is the point: the tag promises the app.
//
//go:embed all:dist
var files embed.FS

const root = "dist"

// Built reports whether the real app is embedded.
const Built = true
