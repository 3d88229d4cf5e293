package rest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The envd data path driven by E2B's own SDKs, when a copy is at hand
// (tests/compat runs them against a whole stack; this pins the proxy's
// side alone). The SDK objects are built directly from what create would
// return (id, envdAccessToken, envdVersion), with E2B_SANDBOX_URL's form:
// wrenn-cp's URL plus the E2b-Sandbox-Id/Port headers, over plain HTTP.
//
//	WRENN_E2B_SDK_JS: the e2b npm package's directory (node on PATH)
//	WRENN_E2B_SDK_PY: a python with the e2b package installed

const sdkJSScript = `
const { Sandbox } = require(process.env.SDK);
const [mode, url, id, token, dir] = process.argv.slice(1);
const sbx = (tok) => new Sandbox({ sandboxId: id, envdAccessToken: tok, envdVersion: "0.6.4",
  sandboxUrl: url, domain: "wrenn.test", apiKey: "e2b_unused" });
(async () => {
  const res = {};
  const s = sbx(token);
  res.running = await s.isRunning();
  if (mode === "gone") {
    try { await s.commands.run("true"); } catch (e) { res.runError = e.name; }
    console.log(JSON.stringify(res)); return;
  }
  const t0 = Date.now(); const chunks = [];
  const r = await s.commands.run("echo one; sleep 1; echo two", { onStdout: (d) => chunks.push([Date.now() - t0, d]) });
  res.stdout = r.stdout; res.exitCode = r.exitCode;
  res.firstChunkMs = chunks.length ? chunks[0][0] : -1; res.endMs = Date.now() - t0;
  await s.files.write(dir + "/a.txt", "hello from the js sdk");
  res.read = await s.files.read(dir + "/a.txt");
  res.listed = (await s.files.list(dir)).map((e) => e.name);
  try { await sbx("wrong").commands.run("true"); } catch (e) { res.wrongTokenError = e.name; }
  console.log(JSON.stringify(res));
})().catch((e) => { console.log(JSON.stringify({ fatal: String(e && e.stack || e) })); });
`

const sdkPyScript = `
import json, sys, time
from packaging.version import Version
from e2b import Sandbox, ConnectionConfig
mode, url, sid, token, d = sys.argv[1:6]
def sbx(tok):
    cc = ConnectionConfig(sandbox_url=url, api_key="e2b_unused",
        extra_sandbox_headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983", "X-Access-Token": tok})
    return Sandbox(sandbox_id=sid, envd_version=Version("0.6.4"), envd_access_token=tok, sandbox_domain="wrenn.test", connection_config=cc)
res = {}
s = sbx(token)
res["running"] = s.is_running()
if mode == "gone":
    try:
        s.commands.run("true")
    except Exception as e:
        res["runError"] = type(e).__name__
    print(json.dumps(res)); sys.exit(0)
t0 = time.time(); chunks = []
r = s.commands.run("echo one; sleep 1; echo two", on_stdout=lambda d: chunks.append(time.time() - t0))
res["stdout"] = r.stdout; res["exitCode"] = r.exit_code
res["firstChunkMs"] = int(chunks[0] * 1000) if chunks else -1; res["endMs"] = int((time.time() - t0) * 1000)
s.files.write(d + "/a.txt", "hello from the python sdk")
res["read"] = s.files.read(d + "/a.txt")
res["listed"] = [e.name for e in s.files.list(d)]
try:
    sbx("wrong").commands.run("true")
except Exception as e:
    res["wrongTokenError"] = type(e).__name__
print(json.dumps(res))
`

type sdkResult struct {
	Fatal           string   `json:"fatal"`
	Running         bool     `json:"running"`
	Stdout          string   `json:"stdout"`
	ExitCode        int      `json:"exitCode"`
	FirstChunkMs    int      `json:"firstChunkMs"`
	EndMs           int      `json:"endMs"`
	Read            string   `json:"read"`
	Listed          []string `json:"listed"`
	WrongTokenError string   `json:"wrongTokenError"`
	RunError        string   `json:"runError"`
}

func TestEnvdProxyWithE2BSDKs(t *testing.T) {
	type sdk struct {
		name, script, want, wrongToken, gone string
		cmd                                  func(ctx context.Context, script string, args ...string) *exec.Cmd
	}
	var sdks []sdk
	if dir := os.Getenv("WRENN_E2B_SDK_JS"); dir != "" {
		sdks = append(sdks, sdk{name: "js", script: sdkJSScript, want: "hello from the js sdk",
			wrongToken: "AuthenticationError", gone: "SandboxNotFoundError",
			cmd: func(ctx context.Context, script string, args ...string) *exec.Cmd {
				c := exec.CommandContext(ctx, "node", append([]string{"-e", script, "--"}, args...)...)
				c.Env = append(os.Environ(), "SDK="+dir)
				return c
			}})
	}
	if py := os.Getenv("WRENN_E2B_SDK_PY"); py != "" {
		sdks = append(sdks, sdk{name: "python", script: sdkPyScript, want: "hello from the python sdk",
			wrongToken: "AuthenticationException", gone: "SandboxNotRunningException",
			cmd: func(ctx context.Context, script string, args ...string) *exec.Cmd {
				return exec.CommandContext(ctx, py, append([]string{"-c", script}, args...)...)
			}})
	}
	if len(sdks) == 0 {
		t.Skip("no E2B SDK: set WRENN_E2B_SDK_JS (the e2b npm package's directory) or WRENN_E2B_SDK_PY (a python with e2b)")
	}
	env := newSandboxEnv(t)
	env.addHost(t)
	for _, s := range sdks {
		t.Run(s.name, func(t *testing.T) {
			sb := env.create(t, map[string]any{})
			dir := t.TempDir()
			run := func(mode string) sdkResult {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				out, err := s.cmd(ctx, s.script, mode, env.Srv.URL, sb.Id, *sb.AccessToken, dir).Output()
				if err != nil {
					var stderr []byte
					if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
						stderr = ee.Stderr
					}
					t.Fatalf("%s sdk: %v\n%s\n%s", s.name, err, out, stderr)
				}
				var res sdkResult
				if err := json.Unmarshal(out, &res); err != nil || res.Fatal != "" {
					t.Fatalf("%s sdk said %s (%v)", s.name, out, err)
				}
				t.Logf("%s sdk: %s", s.name, out)
				return res
			}
			res := run("use")
			if !res.Running || res.Stdout != "one\ntwo\n" || res.ExitCode != 0 {
				t.Errorf("run: %+v", res)
			}
			if res.FirstChunkMs < 0 || res.EndMs-res.FirstChunkMs < 700 {
				t.Errorf("stdout arrived %d ms in, the command ended at %d ms: not streamed", res.FirstChunkMs, res.EndMs)
			}
			if res.Read != s.want || len(res.Listed) != 1 || res.Listed[0] != "a.txt" {
				t.Errorf("files: read %q, listed %v", res.Read, res.Listed)
			}
			if res.WrongTokenError != s.wrongToken {
				t.Errorf("wrong token raised %q, want %s", res.WrongTokenError, s.wrongToken)
			}
			env.doJSON(t, "DELETE", "/v1/sandboxes/"+sb.Id, env.team.Key, nil, http.StatusNoContent, nil)
			res = run("gone")
			if res.Running || res.RunError != s.gone {
				t.Errorf("after kill: isRunning %v, run raised %q (want false, %s)", res.Running, res.RunError, s.gone)
			}
		})
	}
}
