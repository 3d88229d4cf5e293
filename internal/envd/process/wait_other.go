//go:build unix && !linux

package process

// waitExited returns at once where waitid(WNOWAIT) is unavailable. The cost
// is a narrow window in which a signal could reach a reaped, reused pid.
func waitExited(int) {}
