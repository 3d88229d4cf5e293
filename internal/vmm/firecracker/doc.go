// Package firecracker is the vmm.Driver for Firecracker: it starts the
// firecracker binary detached from the agent (own session, optionally in the
// sandbox's network namespace, confined before the guest runs), configures
// and drives the guest over Firecracker's HTTP API on the unix socket given
// by --api-sock (boot, pause, resume, full snapshots, restore by
// snapshot/load, stop by SendCtrlAltDel then SIGKILL), copies the process's
// stdout and stderr (the guest serial console) from a FIFO to a bounded,
// rotated console.log, and re-adopts firecracker processes left by an
// earlier agent through the pid file it writes.
//
// This driver is verified only against the fake API in package fctest
// (in-process and as a stand-in process), never against a real Firecracker
// on hardware: no firecracker binary, and no hardware KVM, exists on the
// machines it was written on. The request sequences and bodies follow
// Firecracker's published swagger and snapshot documentation.
package firecracker
