package rest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/proto/envd/process"
)

// writeJSONString must encode exactly as encoding/json does, for any bytes.
func TestWriteJSONStringMatchesEncodingJSON(t *testing.T) {
	inputs := []string{"", "plain", "quote\" back\\slash", "\x00\x01\x1f\b\f\n\r\t", "<a&b>",
		"\u2028\u2029", "héllo wörld ✓ 🎉", "\xff\xfe bad \xc3", "\xe2\x82", "\xed\xa0\x80"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		want, _ := json.Marshal(in)
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		writeJSONString(bw, []byte(in))
		_ = bw.Flush()
		if got.String() != string(want) {
			t.Errorf("writeJSONString(%q) = %s; encoding/json: %s", in, got.String(), want)
		}
	}
}

// Synchronous execs share one budget for the output they hold: past it
// output is dropped and flagged, and each exec gives its share back.
func TestExecOutputBudget(t *testing.T) {
	start := connectEnvelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: 7}}}})
	chunk := connectEnvelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Data{Data: &process.ProcessEvent_DataEvent{
			Output: &process.ProcessEvent_DataEvent_Stdout{Stdout: []byte(strings.Repeat("\x01", 32<<10))}}}}})
	e, sb := newHostileEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/process.Process/Start" {
			w.Header().Set("Content-Type", "application/proto")
			return
		}
		w.Header().Set("Content-Type", "application/connect+proto")
		_, _ = w.Write(start)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	e.Server.execOutput.limit = 1 << 20
	var res api.ExecResult
	e.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/exec", e.team.Key, map[string]any{"cmd": "yes", "timeout_sec": 1}, http.StatusOK, &res)
	if res.Truncated == nil || !*res.Truncated || res.Stdout == nil || len(*res.Stdout) != 1<<20 {
		n := -1
		if res.Stdout != nil {
			n = len(*res.Stdout)
		}
		t.Errorf("truncated %v, %d bytes of stdout; want truncated at the 1 MiB budget", res.Truncated, n)
	}
	if used := e.Server.execOutput.used.Load(); used != 0 {
		t.Errorf("%d bytes of the budget still taken after the exec answered", used)
	}
}
