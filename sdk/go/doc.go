// Package wrenn is the Go client for the Wrenn API: create microVM
// sandboxes, run commands and terminals in them, and move files in and
// out.
//
// # Quick start
//
//	client, err := wrenn.NewClient() // WRENN_API_KEY, WRENN_API_URL
//	if err != nil {
//		return err
//	}
//	sb, err := client.Sandboxes.Create(ctx, wrenn.CreateOptions{Template: "minimal"})
//	if err != nil {
//		return err
//	}
//	defer sb.Kill(context.WithoutCancel(ctx))
//
//	res, err := sb.Commands.Run(ctx, "echo hello from $(hostname)", wrenn.RunOptions{})
//	if err != nil {
//		return err
//	}
//	fmt.Print(res.Stdout) // exit code in res.ExitCode
//
//	_, err = sb.Files.Write(ctx, "/home/user/data.csv", strings.NewReader("a,b\n1,2\n"))
//
// # Configuration
//
// NewClient reads the API key from WRENN_API_KEY and the address from
// WRENN_API_URL (default http://localhost:8000); WithAPIKey, WithBaseURL,
// WithHTTPClient, WithUserAgent and WithDomain override them. Every call
// takes a context; there are no client-side timeouts besides it.
//
// # Errors
//
// Errors the API answers are *Error values carrying the HTTP status and
// the API's code and message. Test them with errors.Is against the
// sentinels (errors.Is(err, wrenn.ErrNotFound)) or with IsNotFound,
// IsUnauthorized, IsConflict, IsRateLimited (then RetryAfter) and the
// like. Other errors (network, context) are returned wrapped as they are.
//
// # Streaming
//
// Commands with OnStdout/OnStderr callbacks or Stdin, background commands
// (Commands.Start, Commands.Connect), terminals (PTY.Create) and file
// watches (Files.Watch) use WebSockets on the same address and
// credentials. Files.Read and Files.Write stream bodies without holding
// them in memory.
//
// The package wrenntest holds an in-memory fake of the API for tests.
package wrenn
