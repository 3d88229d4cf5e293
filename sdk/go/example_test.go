package wrenn_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

func ExampleNewClient() {
	client, err := wrenn.NewClient(
		wrenn.WithBaseURL("https://wrenn.example.com"),
		wrenn.WithAPIKey(os.Getenv("MY_WRENN_KEY")),
		wrenn.WithUserAgent("my-agent/1.0"),
	)
	if err != nil {
		log.Fatal(err)
	}
	_ = client
}

func ExampleSandboxes_Create() {
	ctx := context.Background()
	client, err := wrenn.NewClient() // WRENN_API_KEY, WRENN_API_URL
	if err != nil {
		log.Fatal(err)
	}
	sb, err := client.Sandboxes.Create(ctx, wrenn.CreateOptions{
		Template: "python",
		MemoryMB: 1024,
		Timeout:  10 * time.Minute,
		Metadata: map[string]string{"session": "42"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Kill(context.WithoutCancel(ctx))
	fmt.Println("sandbox", sb.ID, "is", sb.Details.State)
}

func ExampleCommands_Run() {
	ctx := context.Background()
	client, _ := wrenn.NewClient()
	sb, _ := client.Sandboxes.Connect(ctx, "sbx123")

	// Output arrives as it is printed; the result has all of it too.
	res, err := sb.Commands.Run(ctx, "pip install requests && python -c 'print(1)'", wrenn.RunOptions{
		OnStdout: func(b []byte) { os.Stdout.Write(b) },
		OnStderr: func(b []byte) { os.Stderr.Write(b) },
		Timeout:  5 * time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", res.ExitCode)
}

func ExampleCommands_Start() {
	ctx := context.Background()
	client, _ := wrenn.NewClient()
	sb, _ := client.Sandboxes.Connect(ctx, "sbx123")

	h, err := sb.Commands.Start(ctx, "python3 -m http.server 8000", wrenn.RunOptions{Tag: "web"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("serving at", sb.Host(8000), "pid", h.PID)
	h.Disconnect() // keep it running, stop following it

	// Later: find it again by tag and stop it.
	h, err = sb.Commands.Connect(ctx, "web", wrenn.ConnectOptions{})
	if err != nil {
		log.Fatal(err)
	}
	_ = h.Kill(ctx)
	res, _ := h.Wait(ctx)
	fmt.Println("exited with", res.ExitCode)
}

func ExamplePTYs_Create() {
	ctx := context.Background()
	client, _ := wrenn.NewClient()
	sb, _ := client.Sandboxes.Connect(ctx, "sbx123")

	term, err := sb.PTY.Create(ctx, wrenn.PTYOptions{Cols: 120, Rows: 40, OnData: func(b []byte) { os.Stdout.Write(b) }})
	if err != nil {
		log.Fatal(err)
	}
	_ = term.SendInput(ctx, []byte("uname -a\r"))
	_ = term.Resize(ctx, 100, 30)
	_ = term.SendInput(ctx, []byte("exit\r"))
	code, err := term.Wait(ctx)
	fmt.Println(code, err)
}

func ExampleFiles_Write() {
	ctx := context.Background()
	client, _ := wrenn.NewClient()
	sb, _ := client.Sandboxes.Connect(ctx, "sbx123")

	// Any io.Reader streams; an *os.File of several GiB is fine.
	f, err := os.Open("dataset.csv")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	info, err := sb.Files.Write(ctx, "/home/user/dataset.csv", f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", *info.Size, "bytes")

	_, _ = sb.Files.Write(ctx, "/home/user/hello.txt", strings.NewReader("hello\n"))
}

func ExampleFiles_Watch() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, _ := wrenn.NewClient()
	sb, _ := client.Sandboxes.Connect(ctx, "sbx123")

	events, err := sb.Files.Watch(ctx, "/home/user", true)
	if err != nil {
		log.Fatal(err)
	}
	for ev := range events {
		if ev.Err != nil {
			log.Fatal(ev.Err)
		}
		fmt.Println(ev.Type, ev.Name)
	}
}

func ExampleIsNotFound() {
	ctx := context.Background()
	client, _ := wrenn.NewClient()
	_, err := client.Sandboxes.Connect(ctx, "sbx-gone")
	switch {
	case wrenn.IsNotFound(err):
		fmt.Println("no such sandbox")
	case wrenn.IsRateLimited(err):
		wait, _ := wrenn.RetryAfter(err)
		fmt.Println("retry in", wait)
	case errors.Is(err, wrenn.ErrUnauthorized):
		fmt.Println("check WRENN_API_KEY")
	case err != nil:
		var apiErr *wrenn.Error
		if errors.As(err, &apiErr) {
			fmt.Println(apiErr.Status, apiErr.Code, apiErr.Message)
		}
	}
}

func ExampleSandboxes_List() {
	ctx := context.Background()
	client, _ := wrenn.NewClient()
	sandboxes, err := client.Sandboxes.List(ctx, wrenn.ListOptions{
		States:   []api.SandboxState{api.SandboxStateRunning, api.SandboxStatePaused},
		Metadata: map[string]string{"session": "42"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, sb := range sandboxes {
		fmt.Println(sb.ID, sb.Details.State, sb.Details.Template)
	}
}
