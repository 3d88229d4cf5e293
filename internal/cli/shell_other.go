//go:build !unix

package cli

import "os"

// resizeSignal is nil where no signal reports terminal resizes; the
// remote terminal then keeps its first size.
func resizeSignal() os.Signal { return nil }
