// Package vmmproc owns the host side of a VMM process that must outlive the
// agent, for every vmm driver: starting it detached (its own session,
// optionally inside a network namespace and as another user), recording and
// reading its pid file, re-adopting it from that pid file after checking
// /proc/<pid>/cmdline, watching it exit through a pidfd whether or not it is
// our child, signalling it, and copying its console output into a bounded,
// rotated log. What the VMM is told (QMP, the Firecracker API) and which
// files name it stay in the drivers.
//
// Process handling needs Linux (pidfd, setns); elsewhere Start, Adopt and
// Running return an error.
package vmmproc
