package process

import "golang.org/x/sys/unix"

// waitExited blocks until pid has exited, leaving it a zombie (WNOWAIT) so
// its pid and process group stay reserved until the real Wait reaps it.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}
